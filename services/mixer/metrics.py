"""Every Prometheus metric of the mixer, declared once. Labels: production id (bounded by the
number of productions an instance runs), the sources of those productions, and fixed words."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from services.common.gen.baycast.v1 import mixer_pb2
from services.common.media_service import SENT_BYTES_HELP

FRAMES = Counter(
    "baycast_mixer_frames_total", "Program frames produced by the frame clock", ["production"]
)
TICKS_SKIPPED = Counter(
    "baycast_mixer_ticks_skipped_total",
    "Frame-clock ticks skipped because the mixer fell more than a second behind",
    ["production"],
)
RENDER_SECONDS = Histogram(
    "baycast_mixer_render_seconds",
    "Time to compose one program frame (sources, transition, keys, audio)",
    ["production"],
    buckets=(0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064),
)
CLIP_FAILURES = Counter(
    "baycast_mixer_clip_failures_total",
    "Clips and stills of a production that could not be fetched from the library or opened",
    ["production"],
)
CLIP_LATE_FRAMES = Counter(
    "baycast_mixer_clip_late_frames_total",
    "Ticks at which a playing clip's next frame was not decoded yet (its picture repeated)",
    ["production"],
)
SOUND_LOST = Counter(
    "baycast_mixer_sound_chunks_lost_total",
    "Chunks of the sources' sound whose shared-memory slots were reused before the mixer read them",
    ["production"],
)
SUBSCRIBER_DROPS = Counter(
    "baycast_mixer_subscriber_dropped_frames_total",
    "Frames dropped for media subscribers that read too slowly",
    ["production"],
)
SUBSCRIBERS = Gauge(
    "baycast_mixer_subscribers", "Media subscribers of the mixer's handles", ["production"]
)
PRODUCTIONS = Gauge("baycast_mixer_productions", "Productions this instance runs")
COMMANDS = Counter(
    "baycast_mixer_commands_total", "Switcher commands handled", ["production", "result"]
)
SLATED = Gauge(
    "baycast_mixer_sources_slated", "Sources currently shown as a signal-lost slate", ["production"]
)
TICK_ERRORS = Counter(
    "baycast_mixer_tick_errors_total",
    "Frame-clock ticks that failed (the clock carries on with the next frame)",
    ["production"],
)
TALKBACK_ACTIVE = Gauge(
    "baycast_mixer_talkback_active",
    "1 while the station hears talkback in its return (its mix-minus), else 0",
    ["production", "station"],
)
LEVELER_GAIN = Gauge(
    "baycast_mixer_audio_leveler_gain_db",
    "The loudness leveler's gain on a bus (dB; positive lifts): program, or return/<station>",
    ["production", "bus"],
)
LIMITER_REDUCTION = Gauge(
    "baycast_mixer_audio_limiter_reduction_db",
    "The true-peak limiter's largest gain reduction on a bus over the last meter interval (dB)",
    ["production", "bus"],
)
SOURCE_REDUCTION = Gauge(
    "baycast_mixer_audio_source_gain_reduction_db",
    "A source's gate and compressor gain reduction over the last meter interval (dB)",
    ["production", "source"],
)


def observe_loudness(
    production: str, levels: Sequence[mixer_pb2.Level], returns: Sequence[mixer_pb2.Level]
) -> None:
    """The audio mixer's gain figures from one meter reading."""
    if not production:
        return
    for level in levels:
        if level.source:
            SOURCE_REDUCTION.labels(production, level.source).set(level.gain_reduction_db)
        else:
            LEVELER_GAIN.labels(production, "program").set(level.leveler_gain_db)
            LIMITER_REDUCTION.labels(production, "program").set(level.limiter_reduction_db)
    for level in returns:
        LEVELER_GAIN.labels(production, f"return/{level.source}").set(level.leveler_gain_db)
        LIMITER_REDUCTION.labels(production, f"return/{level.source}").set(
            level.limiter_reduction_db
        )


MEDIA_SENT_BYTES = Counter(
    "baycast_mixer_media_sent_bytes_total", SENT_BYTES_HELP, ["handle", "kind"]
)
LINK_DROPPED_PICTURES = Counter(
    "baycast_mixer_link_dropped_pictures_total",
    "Pictures of a compressed rendition for another host (ADR 0025) replaced while waiting for "
    "its encoder, which ran late",
    ["production"],
)
