"""Every Prometheus metric of the ingest service, declared once. Labels are bounded: a source or
station id (operators create them), a protocol, an HTTP method/code. Never a token."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

from services.common.media_service import SENT_BYTES_HELP

WHIP_REQUESTS = Counter(
    "baycast_ingest_whip_requests_total",
    "WHIP HTTP requests by method and response status",
    ["method", "status"],
)
WHIP_RATE_LIMITED = Counter(
    "baycast_ingest_whip_rate_limited_total",
    "WHIP offers refused with 429 because their client address sent too many",
)
HTTP_RATE_LIMITED = Counter(
    "baycast_ingest_http_rate_limited_total",
    "Requests to unauthenticated routes (pages, WHIP's other methods, /srt) refused with 429 "
    "because their client address sent too many, by route",
    ["route"],
)
RTMP_REFUSED = Counter(
    "baycast_ingest_rtmp_refused_total",
    "RTMP connections ended by ingest before a publish was accepted, by reason: a connection "
    "cap (per_address, total, evicted), the negotiation deadline, a size or count limit of the "
    "chunk stream, an AMF0 command over its bounds, a protocol error, stream-key tries over "
    "their rate (key_rate_address, key_rate_total), a wrong key, or the publish refused",
    ["reason"],
)
RTMP_NEGOTIATING = Gauge(
    "baycast_ingest_rtmp_negotiating",
    "RTMP connections between their accept and an accepted publish",
)
ASYNCIO_TASKS = Gauge(
    "baycast_ingest_asyncio_tasks", "asyncio tasks alive in the ingest process's event loop"
)
SESSIONS = Gauge("baycast_ingest_sessions", "Live contribution sessions", ["protocol"])
STATION_COMMANDS = Counter(
    "baycast_ingest_station_commands_total", "Station commands handled, by verb", ["verb"]
)
SOURCE_ONLINE = Gauge("baycast_ingest_source_online", "1 while a source is live", ["source"])
SOURCE_FPS = Gauge("baycast_ingest_source_fps", "Decoded frames per second", ["source"])
SOURCE_BITRATE = Gauge(
    "baycast_ingest_source_bitrate_kbps", "Received bitrate, kilobits per second", ["source"]
)
SOURCE_PACKETS_LOST = Gauge(
    "baycast_ingest_source_packets_lost",
    "Packets lost since the session began (RTP for WHIP, SRT's detected losses; 0 over RTMP/TCP)",
    ["source"],
)
SOURCE_PACKETS_DROPPED = Gauge(
    "baycast_ingest_source_packets_dropped",
    "Packets lost for good since the session began (SRT: too late to play)",
    ["source"],
)
SOURCE_RETRANSMITS = Gauge(
    "baycast_ingest_source_retransmits",
    "Retransmissions since the session began (SRT: received; RTMP: TCP segments ingest resent)",
    ["source"],
)
SOURCE_JITTER = Gauge(
    "baycast_ingest_source_jitter_ms",
    "Interarrival jitter (RFC 3550; RTMP and SRT: of the video timestamps)",
    ["source"],
)
SOURCE_RTT = Gauge(
    "baycast_ingest_source_rtt_ms",
    "Round-trip time to the station (WHIP: ICE probe; SRT: libsrt; RTMP: TCP_INFO)",
    ["source"],
)
SOURCE_AUDIO_LEVEL = Gauge(
    "baycast_ingest_source_audio_level_dbfs", "Peak audio level over the last second", ["source"]
)
SOURCE_FLAG = Gauge(
    "baycast_ingest_source_flag",
    "1 while the picture is black/frozen or audio silent",
    ["source", "flag"],
)
FRAMES_DROPPED = Counter(
    "baycast_ingest_subscriber_frames_dropped_total",
    "Frames dropped because a media subscriber read too slowly",
    ["source", "subscriber"],
)
SUBSCRIBERS = Gauge("baycast_ingest_subscribers", "Media plane subscribers", ["source"])
LIVE_CLAIMS_UNCHECKED = Counter(
    "baycast_ingest_live_claims_unchecked_total",
    "Contributions admitted with only this instance's check: the ingest-live bucket was "
    "unreachable, so the station could be live on another ingest instance too",
)


def forget_source(source: str) -> None:
    """Remove a source's series when it goes offline, so gauges do not report stale values."""
    for gauge in (
        SOURCE_FPS,
        SOURCE_BITRATE,
        SOURCE_PACKETS_LOST,
        SOURCE_PACKETS_DROPPED,
        SOURCE_RETRANSMITS,
        SOURCE_JITTER,
        SOURCE_RTT,
        SOURCE_AUDIO_LEVEL,
    ):
        with contextlib.suppress(KeyError):
            gauge.remove(source)
    for flag in ("black", "frozen", "silent"):
        with contextlib.suppress(KeyError):
            SOURCE_FLAG.remove(source, flag)


MEDIA_SENT_BYTES = Counter(
    "baycast_ingest_media_sent_bytes_total", SENT_BYTES_HELP, ["handle", "kind"]
)
