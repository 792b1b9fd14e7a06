"""Decode what an output produced and measure it: frame times, gaps, format."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from tests.support.media_files import open_media


def video_times(paths: Sequence[Path]) -> list[float]:
    """Presentation times (s) of every decoded video frame across `paths`, in order."""
    times: list[float] = []
    for path in paths:
        with open_media(path) as container:
            if not container.streams.video:
                kinds = [s.type for s in container.streams]
                raise AssertionError(
                    f"{path.name} ({path.stat().st_size} bytes) has no video stream: {kinds}"
                )
            stream = container.streams.video[0]
            for frame in container.decode(stream):
                if frame.pts is not None:
                    times.append(float(frame.pts * stream.time_base))
    return times


def audio_seconds(path: Path) -> float:
    """Seconds of decoded audio in `path`."""
    samples = 0
    rate = 48_000
    with open_media(path) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples += frame.samples
            rate = frame.sample_rate
    return samples / rate


def largest_gap(times: Sequence[float]) -> float:
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def hls_segments(playlist: Path) -> list[Path]:
    return [
        playlist.parent / line.strip()
        for line in playlist.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
