"""Settings of the graphics service: BAYCAST_GRAPHICS_<FIELD>, then BAYCAST_<FIELD>."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from services.common.renditions import MAX_FPS, MAX_HEIGHT, MAX_WIDTH
from services.common.settings import ServiceSettings, SettingsError
from services.common.steward import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_SECONDS
from services.graphics.data_policy import HOSTS_VAR, NETWORKS_VAR, parse_hosts, parse_networks

DEFAULT_FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
DEFAULT_TIMEZONE = "Asia/Shanghai"
DEFAULT_TEMPLATES_DIR = ""  # only the shipped templates
DEFAULT_WIDTH = 1920
DEFAULT_HEIGHT = 1080
DEFAULT_FPS = 25
# How often the user template folder is scanned for new or changed files.
DEFAULT_TEMPLATE_SCAN_S = 2.0
# A layer stream with no subscriber left stops rendering after this long.
DEFAULT_IDLE_STOP_S = 5.0
# Data bindings (services/graphics/data_policy.py): no host is allowed until named, no
# non-public network is reachable until listed, and files come from this folder only.
DEFAULT_BINDING_HOSTS: tuple[str, ...] = ()
DEFAULT_BINDING_NETWORKS: tuple[str, ...] = ()
DEFAULT_BINDING_DATA_DIR = ".baycast/graphics-data"
# A bound document larger than this is refused; a URL answers within this time or not at all.
DEFAULT_BINDING_MAX_BYTES = 1024 * 1024
DEFAULT_BINDING_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class GraphicsSettings(ServiceSettings):
    templates_dir: str = DEFAULT_TEMPLATES_DIR
    font_path: str = DEFAULT_FONT_PATH
    timezone: str = DEFAULT_TIMEZONE
    default_width: int = DEFAULT_WIDTH
    default_height: int = DEFAULT_HEIGHT
    default_fps: int = DEFAULT_FPS
    template_scan_s: float = DEFAULT_TEMPLATE_SCAN_S
    idle_stop_s: float = DEFAULT_IDLE_STOP_S
    # A production's scene lease lives this long unless its replica renews it (docs/adr/0015):
    # the scenes of a replica that died move to another after about this long.
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    # How often a replica renews its leases and takes the scenes nobody runs.
    lease_renew_seconds: float = DEFAULT_RENEW_SECONDS
    # The hosts a URL binding may name: `host`, `*.domain`, either with `:port` (without: the
    # scheme's default port), comma-separated.
    binding_hosts: tuple[str, ...] = DEFAULT_BINDING_HOSTS
    # Networks of non-public addresses (loopback, private, link-local ...) bindings may reach,
    # as CIDRs; a cloud metadata address needs a network of that one address.
    binding_networks: tuple[str, ...] = DEFAULT_BINDING_NETWORKS
    # The folder file bindings read from; a relative binding path is taken from here.
    binding_data_dir: str = DEFAULT_BINDING_DATA_DIR
    binding_max_bytes: int = DEFAULT_BINDING_MAX_BYTES
    binding_timeout_s: float = DEFAULT_BINDING_TIMEOUT_S

    def validate(self) -> None:
        super().validate()
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"BAYCAST_TIMEZONE is not a time zone: {self.timezone!r}") from None
        if not Path(self.font_path).is_file():
            raise SettingsError(f"BAYCAST_FONT_PATH does not exist: {self.font_path!r}")
        if self.templates_dir and not Path(self.templates_dir).is_dir():
            raise SettingsError(f"BAYCAST_TEMPLATES_DIR is not a folder: {self.templates_dir!r}")
        if not (16 <= self.default_width <= MAX_WIDTH and 16 <= self.default_height <= MAX_HEIGHT):
            raise SettingsError(
                f"BAYCAST_DEFAULT_WIDTH/HEIGHT must be between 16 and {MAX_WIDTH}x{MAX_HEIGHT}"
            )
        if not 1 <= self.default_fps <= MAX_FPS:
            raise SettingsError(f"BAYCAST_DEFAULT_FPS must be between 1 and {MAX_FPS}")
        if not 0 < self.lease_renew_seconds < self.lease_seconds:
            raise SettingsError(
                "BAYCAST_GRAPHICS_LEASE_RENEW_SECONDS must be positive and below LEASE_SECONDS"
            )
        try:
            parse_hosts(self.binding_hosts)
        except ValueError as exc:
            raise SettingsError(f"{HOSTS_VAR}: {exc}") from None
        try:
            parse_networks(self.binding_networks)
        except ValueError as exc:
            raise SettingsError(f"{NETWORKS_VAR}: {exc}") from None
        if not self.binding_data_dir:
            raise SettingsError("BAYCAST_GRAPHICS_BINDING_DATA_DIR must name a folder")
        if self.binding_max_bytes < 1:
            raise SettingsError("BAYCAST_GRAPHICS_BINDING_MAX_BYTES must be positive")
        if not 0 < self.binding_timeout_s <= 60:
            raise SettingsError("BAYCAST_GRAPHICS_BINDING_TIMEOUT_S must be between 0 and 60")
