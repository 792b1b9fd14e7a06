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
