"""Settings from environment variables, one frozen object per service.

A field `http_addr` of the mixer is read from `BAYCAST_MIXER_HTTP_ADDR`, then from the
platform-wide `BAYCAST_HTTP_ADDR`, then from its default. Values are converted by the field's
annotated type and checked at start-up, so a typo stops the service with the variable's name
instead of surfacing as a strange failure mid-show.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.common.tls import InternalTls, TlsError

DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
DEFAULT_DRAIN_SECONDS = 10.0
DEFAULT_UNREADY_SECONDS = 1.0
DEFAULT_BIND_HOST = "127.0.0.1"

# HTTP (metrics, probes, service API) and gRPC (media plane) ports of each service.
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "ingest": (8101, 9101),
    "mixer": (8102, 9102),
    "graphics": (8103, 9103),
    "distribution": (8104, 9104),
    "monitoring": (8105, 9105),
    "control": (8106, 9106),
}


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the environment variable."""


@dataclass(frozen=True)
class ServiceSettings:
    """What every service needs. Services subclass it and add their own fields with defaults."""

    service: str = ""
    instance: str = field(default_factory=socket.gethostname)
    nats_url: str = DEFAULT_NATS_URL
    http_addr: str = ""
    grpc_addr: str = ""
    # The host other services use to reach this one's gRPC server (pod IP in Kubernetes).
    advertise_host: str = ""
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    # After SIGTERM, how long to keep serving with readiness false so load balancers move away.
    unready_seconds: float = DEFAULT_UNREADY_SECONDS
    log_format: str = "auto"  # auto (console on a TTY, else JSON), json, console
    log_level: str = "info"
    # Video planes by shared memory with media-plane peers on the same host (media.proto).
    shared_memory: bool = True
    # Signs and checks the control room's media grants (services/common/credentials.py): the
    # control service, ingest and distribution share it (BAYCAST_MEDIA_GRANT_SECRET); empty:
    # no grants are made or taken.
    media_grant_secret: str = ""
    # Replicas of every key-value bucket and stream (the number of JetStream servers: 3 in the
    # production manifests, 1 on one server as `baycast up` runs it).
    jetstream_replicas: int = 1
    # The CPU this replica may use (0: its cgroup's limit; none: no budget) and what one unit of
    # its work costs (a production, a scene; each service sets its measured default): a replica
    # takes no unit beyond its budget (services/common/capacity.py).
    capacity_cores: float = 0.0
    unit_cores: float = 0.0
    # TLS (services/common/tls.py, docs/adr/0019). The edge: HTTPS on `https_addr` for WHIP,
    # WHEP, the API and the pages, with this certificate; the plain `http_addr` then answers
    # probes and metrics only. Empty: the edges are on `http_addr`.
    https_addr: str = ""
    https_cert_file: str = ""
    https_key_file: str = ""
    # The internal identity (mutual TLS between gRPC peers) and the CA that signs it and the
    # NATS servers' certificates; trusted on top of the system's roots.
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def internal_tls(self) -> InternalTls:
        return InternalTls(self.tls_ca_file, self.tls_cert_file, self.tls_key_file)

    @property
    def grpc_endpoint(self) -> str:
        """host:port to put into stream handles."""
        host, port = split_addr(self.grpc_addr)
        if self.advertise_host:
            host = self.advertise_host
        elif host in ("0.0.0.0", "::", ""):
            host = socket.gethostname()
        return f"{host}:{port}"

    def validate(self) -> None:
        """Cross-field checks; subclasses extend it."""
        split_addr(self.http_addr)
        split_addr(self.grpc_addr)
        self._validate_tls()
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError(
                f"BAYCAST_LOG_FORMAT must be auto, json or console, not {self.log_format!r}"
            )
        if self.drain_seconds <= 0:
            raise SettingsError("BAYCAST_DRAIN_SECONDS must be positive")
        if not 0 <= self.unready_seconds < self.drain_seconds:
            raise SettingsError("BAYCAST_UNREADY_SECONDS must be between 0 and the drain time")
        if self.capacity_cores < 0 or self.unit_cores < 0:
            raise SettingsError("BAYCAST_CAPACITY_CORES and BAYCAST_UNIT_CORES must be >= 0")
        if not 1 <= self.jetstream_replicas <= 5:
            raise SettingsError("BAYCAST_JETSTREAM_REPLICAS must be 1 to 5 (JetStream's limit)")
        if not all(
            u.strip().startswith(("nats://", "tls://", "ws://", "wss://"))
            for u in self.nats_url.split(",")
        ):
            raise SettingsError(f"BAYCAST_NATS_URL is not a NATS URL: {self.nats_url!r}")

    def _validate_tls(self) -> None:
        if self.https_addr:
            split_addr(self.https_addr)
            if not (self.https_cert_file and self.https_key_file):
                raise SettingsError(
                    "BAYCAST_HTTPS_ADDR needs BAYCAST_HTTPS_CERT_FILE and BAYCAST_HTTPS_KEY_FILE"
                )
        elif self.https_cert_file or self.https_key_file:
            raise SettingsError("BAYCAST_HTTPS_CERT_FILE and _KEY_FILE need BAYCAST_HTTPS_ADDR")
        for path, var in (
            (self.https_cert_file, "BAYCAST_HTTPS_CERT_FILE"),
            (self.https_key_file, "BAYCAST_HTTPS_KEY_FILE"),
        ):
            if path and not os.access(path, os.R_OK):
                raise SettingsError(f"{var}: cannot read {path}")
        try:
            self.internal_tls.check()
        except TlsError as exc:
            raise SettingsError(f"BAYCAST_TLS_*: {exc}") from None


S = TypeVar("S", bound=ServiceSettings)


def split_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise SettingsError(f"address {addr!r} is not host:port")
    return host.strip("[]"), int(port)


def _convert(raw: str, annotation: Any, var: str) -> Any:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _convert(raw, args[0], var) if raw != "" else None
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise SettingsError(f"{var} must be true or false, not {raw!r}")
    if annotation in (int, float):
        try:
            return annotation(raw)
        except ValueError:
            raise SettingsError(f"{var} must be a number, not {raw!r}") from None
    if origin is tuple:
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def load_settings(
    cls: type[S], service: str, environ: Mapping[str, str] | None = None, **overrides: Any
) -> S:
    """Build `cls` for `service` from the environment; `overrides` win over everything."""
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    http_port, grpc_port = DEFAULT_PORTS.get(service, (0, 0))
    values: dict[str, Any] = {
        "service": service,
        "http_addr": f"{DEFAULT_BIND_HOST}:{http_port}",
        "grpc_addr": f"{DEFAULT_BIND_HOST}:{grpc_port}",
    }
    for f in dataclasses.fields(cls):
        if f.name == "service":
            continue
        for var in (f"BAYCAST_{service.upper()}_{f.name.upper()}", f"BAYCAST_{f.name.upper()}"):
            if var in env:
                values[f.name] = _convert(env[var], hints[f.name], var)
                break
    values.update(overrides)
    settings = cls(**values)
    settings.validate()
    return settings
