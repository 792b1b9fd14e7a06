"""The encoder's clock: a backlog up to MAX_ENCODER_BACKLOG_S is ridden out, pictures beyond it
are skipped (counted), and the sound stays whole."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from prometheus_client import REGISTRY

from services.distribution.encoder import MAX_ENCODER_BACKLOG_S, ProgramEncoder, Tick
from services.distribution.settings import DistributionSettings

FPS = 50


async def test_pictures_are_skipped_only_past_a_second_of_backlog() -> None:
    settings = DistributionSettings(fps=FPS)

    async def no_frames(_rendition: object) -> object:  # never called: no subscription here
        raise AssertionError

    encoder = ProgramEncoder("backlog", settings, no_frames, lambda _packet: None)  # type: ignore[arg-type]
    skipped = (
        REGISTRY.get_sample_value(
            "baycast_distribution_skipped_frames_total", {"production": "backlog"}
        )
        or 0.0
    )
    # No encoder thread takes the ticks: the backlog grows by one a tick.
    clock = asyncio.create_task(encoder._clock())
    limit = round(MAX_ENCODER_BACKLOG_S * FPS)
    for _ in range(500):  # 1.4 s of ticks at 50 fps, with room for a slow machine
        if encoder.ticks >= limit + 20:
            break
        await asyncio.sleep(0.02)
    assert encoder.ticks >= limit + 20
    clock.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await clock
    ticks: list[Tick] = []
    while not encoder._jobs.empty():
        job = encoder._jobs.get_nowait()
        assert job is not None
        ticks.append(job)
    assert [t.index for t in ticks] == list(range(len(ticks)))
    # Ticks seeing a backlog of 0..limit keep their pictures; the rest carry sound only.
    assert [t.encode_video for t in ticks] == [True] * (limit + 1) + [False] * (
        len(ticks) - limit - 1
    )
    assert all(t.audio.shape == (48_000 // FPS, 2) for t in ticks)
    after = REGISTRY.get_sample_value(
        "baycast_distribution_skipped_frames_total", {"production": "backlog"}
    )
    assert after == pytest.approx(skipped + len(ticks) - limit - 1)
