"""Ingest settings, from `BAYCAST_INGEST_<FIELD>` then `BAYCAST_<FIELD>`."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common.settings import ServiceSettings, SettingsError, split_addr

DEFAULT_ICE_HOSTS = ("127.0.0.1",)
DEFAULT_MAX_SESSIONS = 32
DEFAULT_MAX_SDP_BYTES = 64 * 1024
DEFAULT_SUBSCRIBER_QUEUE = 8
DEFAULT_STATS_INTERVAL_S = 1.0
DEFAULT_RTMP_ADDR = "127.0.0.1:1935"
DEFAULT_SRT_ADDR = "127.0.0.1:9000"
DEFAULT_SRT_PORTS = 0
DEFAULT_WHIP_RATE_PER_S = 5.0
DEFAULT_WHIP_RATE_BURST = 20
DEFAULT_LIVE_CLAIM_TTL_S = 6.0
DEFAULT_LIVE_CLAIM_REFRESH_S = 2.0
DEFAULT_HTTP_RATE_PER_S = 20.0
DEFAULT_HTTP_RATE_BURST = 60
DEFAULT_RTMP_MAX_CONNECTIONS = 64
DEFAULT_RTMP_MAX_CONNECTIONS_PER_ADDR = 8
DEFAULT_RTMP_NEGOTIATION_TIMEOUT_S = 10.0
DEFAULT_RTMP_MAX_COMMAND_BYTES = 64 * 1024
DEFAULT_RTMP_MAX_MEDIA_BYTES = 8 * 1024 * 1024
DEFAULT_RTMP_MAX_PARTIAL_STREAMS = 8
DEFAULT_RTMP_MAX_PARTIAL_BYTES = 16 * 1024 * 1024
DEFAULT_RTMP_KEY_RATE_PER_S = 1.0
DEFAULT_RTMP_KEY_RATE_BURST = 10
DEFAULT_RTMP_KEY_RATE_TOTAL_PER_S = 20.0
DEFAULT_RTMP_KEY_RATE_TOTAL_BURST = 40


@dataclass(frozen=True)
class IngestSettings(ServiceSettings):
    # Addresses aioice may gather host candidates on (127.0.0.1 is allowed here, unlike aioice's
    # own default). Empty means every address of the machine except loopback.
    ice_hosts: tuple[str, ...] = DEFAULT_ICE_HOSTS
    # Announced instead of the host address in SDP answers (a pod behind a 1:1 NAT / LoadBalancer).
    public_ip: str = ""
    # UDP port range for ICE host candidates; 0/0 lets the kernel pick.
    rtc_port_min: int = 0
    rtc_port_max: int = 0
    max_sessions: int = DEFAULT_MAX_SESSIONS
    max_sdp_bytes: int = DEFAULT_MAX_SDP_BYTES
    # WHIP offers each client address may POST: a token bucket refilled at this rate, this deep.
    whip_rate_per_s: float = DEFAULT_WHIP_RATE_PER_S
    whip_rate_burst: int = DEFAULT_WHIP_RATE_BURST
    # Every other request to an unauthenticated route (station pages and their configuration,
    # WHIP's DELETE/PATCH/OPTIONS, /srt/<station>) the same way; probes and /metrics are free.
    http_rate_per_s: float = DEFAULT_HTTP_RATE_PER_S
    http_rate_burst: int = DEFAULT_HTTP_RATE_BURST
    # The base URL stations use to reach WHIP (printed by `station add`); default: http_addr.
    public_url: str = ""
    subscriber_queue: int = DEFAULT_SUBSCRIBER_QUEUE
    stats_interval_s: float = DEFAULT_STATS_INTERVAL_S
    # RTMP and SRT contribution listeners.
    rtmp_addr: str = DEFAULT_RTMP_ADDR
    srt_addr: str = DEFAULT_SRT_ADDR
    # RTMP before a publish is accepted (rtmp_limits.py): connections negotiating at once, in
    # all and per client address (IPv6: per /64); one deadline from the handshake to the
    # accepted key; the largest command or data message (and, until accepted, every message:
    # no media before that) and audio/video message; chunk streams holding a partial message
    # and their bytes together, per connection; stream-key tries per address and in all (a
    # token bucket each: refused tries answer as a wrong key, with no lookup).
    rtmp_max_connections: int = DEFAULT_RTMP_MAX_CONNECTIONS
    rtmp_max_connections_per_addr: int = DEFAULT_RTMP_MAX_CONNECTIONS_PER_ADDR
    rtmp_negotiation_timeout_s: float = DEFAULT_RTMP_NEGOTIATION_TIMEOUT_S
    rtmp_max_command_bytes: int = DEFAULT_RTMP_MAX_COMMAND_BYTES
    rtmp_max_media_bytes: int = DEFAULT_RTMP_MAX_MEDIA_BYTES
    rtmp_max_partial_streams: int = DEFAULT_RTMP_MAX_PARTIAL_STREAMS
    rtmp_max_partial_bytes: int = DEFAULT_RTMP_MAX_PARTIAL_BYTES
    rtmp_key_rate_per_s: float = DEFAULT_RTMP_KEY_RATE_PER_S
    rtmp_key_rate_burst: int = DEFAULT_RTMP_KEY_RATE_BURST
    rtmp_key_rate_total_per_s: float = DEFAULT_RTMP_KEY_RATE_TOTAL_PER_S
    rtmp_key_rate_total_burst: int = DEFAULT_RTMP_KEY_RATE_TOTAL_BURST
    # SRT: station N (in creation order) listens on srt_addr's port + N, for N < srt_ports; 0
    # turns SRT off. Passphrases are derived from srt_secret (random per process when empty).
    srt_ports: int = DEFAULT_SRT_PORTS
    srt_secret: str = ""
    # Where stations reach distribution's HTTP (returns, tally, cues; docs/adr/0012), e.g.
    # https://exchange.example.org; empty: the same origin as the station page.
    exchange_url: str = ""
    # A station is live on one ingest instance at a time (live_claims.py): each instance
    # refreshes its claims every live_claim_refresh_s; those of an instance that died lapse
    # after live_claim_ttl_s, and its stations may then publish to another instance.
    live_claim_ttl_s: float = DEFAULT_LIVE_CLAIM_TTL_S
    live_claim_refresh_s: float = DEFAULT_LIVE_CLAIM_REFRESH_S

    def whip_base_url(self, bound_port: int) -> str:
        """Where stations reach WHIP: `public_url`, else this server's own address."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = split_addr(self.http_addr)
        if host in ("0.0.0.0", "::", ""):
            host = self.advertise_host or "127.0.0.1"
        return f"http://{host}:{bound_port or port}"

    @property
    def exchange_origin(self) -> str:
        """`scheme://host[:port]` of `exchange_url` (what the page's CSP allows), or ""."""
        if not self.exchange_url:
            return ""
        parts = urlsplit(self.exchange_url)
        return f"{parts.scheme.lower()}://{parts.netloc.lower()}"

    def validate(self) -> None:
        super().validate()
        if self.exchange_url:
            parts = urlsplit(self.exchange_url)
            try:
                parts.port  # noqa: B018 (raises on a port that is not a number)
            except ValueError:
                raise SettingsError("BAYCAST_INGEST_EXCHANGE_URL has a malformed port") from None
            # It goes into a Content-Security-Policy header: nothing that could end a directive.
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.query
                or parts.fragment
                or parts.username is not None
                or any(c in self.exchange_url for c in " ;,'\"\r\n")
            ):
                raise SettingsError(
                    "BAYCAST_INGEST_EXCHANGE_URL must be an http(s) URL such as "
                    "https://exchange.example.org (no query, fragment or credentials)"
                )
        if self.max_sessions < 1:
            raise SettingsError("BAYCAST_INGEST_MAX_SESSIONS must be at least 1")
        if bool(self.rtc_port_min) != bool(self.rtc_port_max) or not (
            0 <= self.rtc_port_min <= self.rtc_port_max <= 65535
        ):
            raise SettingsError(
                "BAYCAST_INGEST_RTC_PORT_MIN/MAX must both be set, with min <= max <= 65535"
            )
        if self.subscriber_queue < 1:
            raise SettingsError("BAYCAST_INGEST_SUBSCRIBER_QUEUE must be at least 1")
        if self.whip_rate_per_s <= 0 or self.whip_rate_burst < 1:
            raise SettingsError(
                "BAYCAST_INGEST_WHIP_RATE_PER_S must be positive and WHIP_RATE_BURST at least 1"
            )
        if self.http_rate_per_s <= 0 or self.http_rate_burst < 1:
            raise SettingsError(
                "BAYCAST_INGEST_HTTP_RATE_PER_S must be positive and HTTP_RATE_BURST at least 1"
            )
        self._validate_rtmp()
        if self.live_claim_refresh_s <= 0 or self.live_claim_ttl_s < 2 * self.live_claim_refresh_s:
            raise SettingsError(
                "BAYCAST_INGEST_LIVE_CLAIM_REFRESH_S must be positive and LIVE_CLAIM_TTL_S at "
                "least twice as long (one late refresh must not let a live claim lapse)"
            )
        split_addr(self.rtmp_addr)
        _, srt_port = split_addr(self.srt_addr)
        if self.srt_ports < 0 or (self.srt_ports and srt_port + self.srt_ports > 65536):
            raise SettingsError(
                "BAYCAST_INGEST_SRT_PORTS must be >= 0 and fit above SRT_ADDR's port"
            )

    def _validate_rtmp(self) -> None:
        if not 1 <= self.rtmp_max_connections_per_addr <= self.rtmp_max_connections:
            raise SettingsError(
                "BAYCAST_INGEST_RTMP_MAX_CONNECTIONS_PER_ADDR must be at least 1 and at most "
                "RTMP_MAX_CONNECTIONS"
            )
        if self.rtmp_negotiation_timeout_s <= 0:
            raise SettingsError("BAYCAST_INGEST_RTMP_NEGOTIATION_TIMEOUT_S must be positive")
        # A connect or publish of a few hundred bytes must fit; a keyframe needs room.
        if self.rtmp_max_command_bytes < 1024 or self.rtmp_max_media_bytes < 64 * 1024:
            raise SettingsError(
                "BAYCAST_INGEST_RTMP_MAX_COMMAND_BYTES must be at least 1024 and "
                "RTMP_MAX_MEDIA_BYTES at least 65536"
            )
        if self.rtmp_max_partial_streams < 2 or self.rtmp_max_partial_bytes < max(
            self.rtmp_max_media_bytes, self.rtmp_max_command_bytes
        ):
            raise SettingsError(
                "BAYCAST_INGEST_RTMP_MAX_PARTIAL_STREAMS must be at least 2 (audio and video) "
                "and RTMP_MAX_PARTIAL_BYTES at least RTMP_MAX_MEDIA_BYTES"
            )
        if (
            min(self.rtmp_key_rate_per_s, self.rtmp_key_rate_total_per_s) <= 0
            or min(self.rtmp_key_rate_burst, self.rtmp_key_rate_total_burst) < 1
        ):
            raise SettingsError(
                "BAYCAST_INGEST_RTMP_KEY_RATE_(TOTAL_)PER_S must be positive and "
                "RTMP_KEY_RATE_(TOTAL_)BURST at least 1"
            )
