"""Settings of the graphics service: BAYCAST_GRAPHICS_<FIELD>, then BAYCAST_<FIELD>."""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import ServiceSettings, SettingsError
from services.common.steward import DEFAULT_LEASE_SECONDS, DEFAULT_RENEW_SECONDS

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
        if not (16 <= self.default_width <= 7680 and 16 <= self.default_height <= 4320):
            raise SettingsError("BAYCAST_DEFAULT_WIDTH/HEIGHT out of range")
        if not 1 <= self.default_fps <= 120:
            raise SettingsError("BAYCAST_DEFAULT_FPS must be between 1 and 120")
        if not 0 < self.lease_renew_seconds < self.lease_seconds:
            raise SettingsError(
                "BAYCAST_GRAPHICS_LEASE_RENEW_SECONDS must be positive and below LEASE_SECONDS"
            )
