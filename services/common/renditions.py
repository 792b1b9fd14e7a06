"""What a consumer may ask of any producer's `Media.Subscribe`: one validator, one set of limits.

Every producer (ingest's sources, the mixer's outputs, graphics' layers) checks a request here
before it allocates anything for it, and answers INVALID_ARGUMENT with the reason. A producer
adds only what is its own to refuse (the pixel formats it makes, the sample rate it mixes at).
"""

from __future__ import annotations

from collections.abc import Collection

from services.common.gen.baycast.v1 import media_pb2

# The largest picture any handle is served at (UHD): a scaled rendition costs its producer a
# ring of frames of this size (ADR 0010), so the bound is also a bound on that memory.
MAX_WIDTH, MAX_HEIGHT = 3840, 2160
MAX_FPS = 120
AUDIO_RATES = (8_000, 96_000)


def rendition_problem(
    r: media_pb2.Rendition,
    pixel_formats: Collection[media_pb2.PixelFormat.ValueType] = media_pb2.PixelFormat.values(),
) -> str:
    """Why `r` cannot be served, or '' if it can; `pixel_formats`: those the producer makes
    (PIXEL_FORMAT_UNSPECIFIED, "as the producer has it", is always accepted)."""
    if bool(r.width) != bool(r.height):
        return "width and height are given together or not at all"
    if r.width % 2 or r.height % 2 or r.width > MAX_WIDTH or r.height > MAX_HEIGHT:
        return f"width and height must be even and at most {MAX_WIDTH}x{MAX_HEIGHT}"
    if r.fps > MAX_FPS:
        return f"fps must be at most {MAX_FPS}"
    if r.pixel_format not in media_pb2.PixelFormat.values():
        return "unknown pixel format"
    if r.pixel_format != media_pb2.PIXEL_FORMAT_UNSPECIFIED and r.pixel_format not in pixel_formats:
        names = ", ".join(media_pb2.PixelFormat.Name(f) for f in pixel_formats if f)
        return f"this producer serves {names} only"
    if r.audio_channels not in (0, 1, 2):
        return "audio_channels must be 1 or 2"
    if r.audio_sample_rate and not AUDIO_RATES[0] <= r.audio_sample_rate <= AUDIO_RATES[1]:
        return f"audio_sample_rate must be between {AUDIO_RATES[0]} and {AUDIO_RATES[1]}"
    if r.no_video and r.no_audio:
        return "no_video and no_audio leave nothing to send"
    return ""
