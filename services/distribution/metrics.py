"""Every metric of the distribution service. Labels: production and output ids (operator-made,
bounded by configuration), never a URL or a key."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

OUTPUT_LABELS = ("production", "output")

OUTPUT_STATE = Gauge(
    "baycast_distribution_output_state",
    "Output status: 1 idle, 2 connecting, 3 live, 4 retrying, 5 failed",
    OUTPUT_LABELS,
)
OUTPUT_BYTES = Counter(
    "baycast_distribution_output_bytes_total", "Bytes of media muxed to the output", OUTPUT_LABELS
)
OUTPUT_BITRATE = Gauge(
    "baycast_distribution_output_bitrate_bits_per_second",
    "Media bitrate sent to the output over the last second",
    OUTPUT_LABELS,
)
OUTPUT_RECONNECTS = Counter(
    "baycast_distribution_output_reconnects_total",
    "Times a live output's connection broke and was retried",
    OUTPUT_LABELS,
)
OUTPUT_DROPPED = Counter(
    "baycast_distribution_output_dropped_packets_total",
    "Packets dropped because the output's queue was full (dropped to the next keyframe)",
    OUTPUT_LABELS,
)
OUTPUT_QUEUE = Gauge(
    "baycast_distribution_output_queue_packets",
    "Packets waiting in the output's queue",
    OUTPUT_LABELS,
)
ENCODED_FRAMES = Counter(
    "baycast_distribution_encoded_frames_total", "Video frames encoded", ("production",)
)
SLATE_FRAMES = Counter(
    "baycast_distribution_slate_frames_total",
    "Video frames encoded from the slate because the program was missing",
    ("production",),
)
SKIPPED_FRAMES = Counter(
    "baycast_distribution_skipped_frames_total",
    "Video frames not encoded because the encoder was behind the clock",
    ("production",),
)
AUDIO_UNDERRUN_SAMPLES = Counter(
    "baycast_distribution_audio_filled_samples_total",
    "Audio samples filled with silence because the program's audio was late or missing",
    ("production",),
)
PROGRAM_PRESENT = Gauge(
    "baycast_distribution_program_present",
    "1 while the program feeds the encoder, 0 while the slate does",
    ("production",),
)
PRODUCTIONS_OWNED = Gauge(
    "baycast_distribution_productions_owned",
    "Productions whose outputs this replica runs (it holds their leases; owned_productions.py)",
)
HLS_VIEWERS = Gauge(
    "baycast_distribution_hls_viewers",
    "Distinct HLS sessions seen over the sliding viewer window",
    ("production",),
)
HLS_SEGMENT_REQUESTS = Counter(
    "baycast_distribution_hls_segment_requests_total", "HLS segments served", ("production",)
)
HLS_PLAYLIST_REQUESTS = Counter(
    "baycast_distribution_hls_playlist_requests_total", "HLS playlists served", ("production",)
)


def forget_output(production: str, output: str) -> None:
    """Remove an output's series when it is removed."""
    for metric in (
        OUTPUT_STATE,
        OUTPUT_BYTES,
        OUTPUT_BITRATE,
        OUTPUT_RECONNECTS,
        OUTPUT_DROPPED,
        OUTPUT_QUEUE,
    ):
        with contextlib.suppress(KeyError):
            metric.remove(production, output)


# The exchange's tally, cues and station event streams (docs/adr/0012). Station ids are
# operator-made and bounded like production ids.
TALLY_PACKETS = Counter(
    "baycast_distribution_tally_packets_total",
    "TSL UMD v5 packets sent to stations' tally devices",
    ("transport",),
)
TALLY_SEND_ERRORS = Counter(
    "baycast_distribution_tally_send_errors_total",
    "TSL UMD v5 packets that could not be sent, and TCP connections that failed or were dropped",
    ("transport",),
)
TALLY_TCP_CONNECTED = Gauge(
    "baycast_distribution_tally_tcp_connected",
    "1 while the TSL TCP connection to the station's tally device is up, else 0",
    ("station",),
)
STATION_STREAMS = Gauge(
    "baycast_distribution_station_event_streams",
    "Station event streams (Server-Sent Events) open now",
)
STATION_STREAMS_DROPPED = Counter(
    "baycast_distribution_station_event_streams_dropped_total",
    "Station event streams closed because the reader fell behind",
)
CUES = Counter(
    "baycast_distribution_cues_total",
    "Cues sent, acknowledged and cleared",
    ("production", "action"),
)

# The exchange's WHEP viewers (docs/adr/0012). Labels: production and the feed's kind (return,
# program, clean, multiview, source): never a token, a station-chosen string or a session id.
WHEP_LABELS = ("production", "handle")

WHEP_VIEWERS = Gauge(
    "baycast_distribution_whep_viewers",
    "WHEP viewers by production and kind of feed (connecting or connected)",
    WHEP_LABELS,
)
WHEP_SESSIONS = Counter(
    "baycast_distribution_whep_sessions_total",
    "WHEP offers answered, by HTTP status: 201 started, anything else refused",
    ("status",),
)
WHEP_SENT_BYTES = Counter(
    "baycast_distribution_whep_sent_bytes_total",
    "RTP payload bytes sent to WHEP viewers",
    WHEP_LABELS,
)
WHEP_BITRATE = Gauge(
    "baycast_distribution_whep_sent_bits_per_second",
    "RTP payload bitrate sent to the connected WHEP viewers together, over the last second",
    WHEP_LABELS,
)
WHEP_LOSS = Gauge(
    "baycast_distribution_whep_loss_fraction",
    "Highest fraction of packets lost among the connected WHEP viewers (RTCP receiver reports)",
    WHEP_LABELS,
)
WHEP_RTT = Gauge(
    "baycast_distribution_whep_rtt_seconds",
    "Highest round-trip time among the connected WHEP viewers (RTCP receiver reports)",
    WHEP_LABELS,
)


def forget_whep_quality(production: str, handle: str) -> None:
    """Remove the quality series of a feed kind nobody watches any more (no stale maxima)."""
    for metric in (WHEP_BITRATE, WHEP_LOSS, WHEP_RTT):
        with contextlib.suppress(KeyError):
            metric.remove(production, handle)


def forget_whep(production: str, handle: str) -> None:
    """Remove every WHEP series of a deleted production's feed kind."""
    forget_whep_quality(production, handle)
    for metric in (WHEP_VIEWERS, WHEP_SENT_BYTES):
        with contextlib.suppress(KeyError):
            metric.remove(production, handle)
