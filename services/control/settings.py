"""Settings of the control service: BAYCAST_CONTROL_<FIELD>, then BAYCAST_<FIELD>."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common.bus import url_user
from services.common.gen.baycast.v1 import operators_pb2
from services.common.roles import Role
from services.common.settings import ServiceSettings, SettingsError

# A browser session lasts a show day at most, and ends after this long without a request.
DEFAULT_SESSION_TTL_S = 12 * 3600.0
DEFAULT_SESSION_IDLE_S = 2 * 3600.0
DEFAULT_MAX_SESSIONS = 1000
# Logins per client address: a burst for a control room behind one NAT, then one every 2 s.
DEFAULT_LOGIN_RATE_PER_S = 0.5
DEFAULT_LOGIN_BURST = 10
# Events waiting for one event-stream client; a client this far behind is dropped (it
# reconnects and starts from a fresh snapshot). Audio levels alone come ~10 times a second.
DEFAULT_EVENT_QUEUE = 256
DEFAULT_MAX_EVENT_CLIENTS = 200
DEFAULT_COMMAND_TIMEOUT_S = 5.0
# Parts of a production's view (and of a new event stream's snapshot) wait this long at most.
DEFAULT_READ_TIMEOUT_S = 2.0
# How often open event streams re-check their operator's token (revoked within 2 s).
DEFAULT_CREDENTIAL_CHECK_S = 0.5
# Media grants per operator: a page asks for one before each WebRTC offer and hang-up (a few a
# minute), so a burst covers a page opening its players; a loop asking more is throttled.
DEFAULT_GRANT_RATE_PER_S = 1.0
DEFAULT_GRANT_BURST = 20
# Where `make setup` installs the pages' front-end modules (Preact, htm) from the npm registry;
# relative to the working directory (`baycast up` and the tests run from the checkout).
DEFAULT_WEB_MODULES = "build/web/node_modules"


def origin_of(url: str) -> str:
    """`https://host:8443/path` -> `https://host:8443` ("" for "")."""
    if not url:
        return ""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class ControlSettings(ServiceSettings):
    # Distribution's HTTP base (WHEP returns and program feeds the pages play): allowed by the
    # pages' Content-Security-Policy next to this origin.
    exchange_url: str = ""
    # Ingest's HTTP base: the director's talkback microphone goes there over WHIP.
    ingest_url: str = ""
    # The control room's own URL as people reach it (behind a proxy: the public one); empty:
    # the origin each request names. State-changing browser requests must come from it.
    public_url: str = ""
    # Honour X-Forwarded-Proto, -Host and -For from a reverse proxy in front of the service.
    trust_proxy: bool = False
    session_ttl_s: float = DEFAULT_SESSION_TTL_S
    session_idle_s: float = DEFAULT_SESSION_IDLE_S
    max_sessions: int = DEFAULT_MAX_SESSIONS
    login_rate_per_s: float = DEFAULT_LOGIN_RATE_PER_S
    login_burst: int = DEFAULT_LOGIN_BURST
    event_queue: int = DEFAULT_EVENT_QUEUE
    max_event_clients: int = DEFAULT_MAX_EVENT_CLIENTS
    command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
    read_timeout_s: float = DEFAULT_READ_TIMEOUT_S
    credential_check_s: float = DEFAULT_CREDENTIAL_CHECK_S
    grant_rate_per_s: float = DEFAULT_GRANT_RATE_PER_S
    grant_burst: int = DEFAULT_GRANT_BURST
    # The npm packages folder holding preact/ and htm/ (the image sets its own).
    web_modules: str = DEFAULT_WEB_MODULES
    # The NATS URL of each control-room role's user (role_buses.py): required when the service's
    # own URL names a user; without users every role shares the service's connection.
    director_nats_url: str = ""
    graphics_nats_url: str = ""
    audio_nats_url: str = ""
    viewer_nats_url: str = ""

    def role_nats_urls(self) -> dict[Role, str]:
        return {
            operators_pb2.ROLE_DIRECTOR: self.director_nats_url,
            operators_pb2.ROLE_GRAPHICS: self.graphics_nats_url,
            operators_pb2.ROLE_AUDIO: self.audio_nats_url,
            operators_pb2.ROLE_VIEWER: self.viewer_nats_url,
        }

    @property
    def exchange_origin(self) -> str:
        return origin_of(self.exchange_url)

    @property
    def public_origin(self) -> str:
        return origin_of(self.public_url)

    def validate(self) -> None:
        super().validate()
        urls = (
            ("EXCHANGE_URL", self.exchange_url),
            ("INGEST_URL", self.ingest_url),
            ("PUBLIC_URL", self.public_url),
        )
        for name, url in urls:
            parts = urlsplit(url)
            if url and (parts.scheme not in ("http", "https") or not parts.netloc):
                raise SettingsError(f"BAYCAST_CONTROL_{name} is not an http(s) URL: {url!r}")
        positive = {
            "SESSION_TTL_S": self.session_ttl_s,
            "SESSION_IDLE_S": self.session_idle_s,
            "MAX_SESSIONS": self.max_sessions,
            "LOGIN_RATE_PER_S": self.login_rate_per_s,
            "LOGIN_BURST": self.login_burst,
            "EVENT_QUEUE": self.event_queue,
            "MAX_EVENT_CLIENTS": self.max_event_clients,
            "COMMAND_TIMEOUT_S": self.command_timeout_s,
            "READ_TIMEOUT_S": self.read_timeout_s,
            "CREDENTIAL_CHECK_S": self.credential_check_s,
            "GRANT_RATE_PER_S": self.grant_rate_per_s,
            "GRANT_BURST": self.grant_burst,
        }
        for name, value in positive.items():
            if value <= 0:
                raise SettingsError(f"BAYCAST_CONTROL_{name} must be positive")
        if self.credential_check_s > 2.0:
            raise SettingsError("BAYCAST_CONTROL_CREDENTIAL_CHECK_S must be at most 2 s")
        # With NATS users, the service's own user may send no operator's write: each role's
        # user is needed, or every command of the control room would be refused by the bus.
        role_urls = {
            "DIRECTOR_NATS_URL": self.director_nats_url,
            "GRAPHICS_NATS_URL": self.graphics_nats_url,
            "AUDIO_NATS_URL": self.audio_nats_url,
            "VIEWER_NATS_URL": self.viewer_nats_url,
        }
        missing = [name for name, url in role_urls.items() if not url]
        if url_user(self.nats_url) and missing:
            raise SettingsError(
                f"BAYCAST_CONTROL_{missing[0]} is required when BAYCAST_NATS_URL names a user: "
                "each control-room role sends its commands as its own NATS user"
            )
