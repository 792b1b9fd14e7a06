"""Outputs outlive the program: a mixer restart shows the slate, with silence, on every output."""

from __future__ import annotations

import asyncio
import itertools

import av
import numpy as np
from prometheus_client import REGISTRY

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.handles import HandleDirectory
from tests.integration.distribution.conftest import FPS, PROGRAM_YUV, Show
from tests.integration.distribution.media_check import largest_gap
from tests.support.media_source import Card, FakeMediaServer
from tests.support.rtmp import RtmpServer


def picture_kinds(path: str) -> list[tuple[float, str]]:
    """(time, 'program' | 'slate') for every video frame: the top-left corner tells them apart."""
    out = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            corner = int(np.median(frame.to_ndarray()[:16, :16]))
            kind = "program" if abs(corner - PROGRAM_YUV[0]) <= 4 else "slate"
            out.append((float(frame.pts * stream.time_base), kind))
    return out


def loudness(path: str) -> list[tuple[float, float]]:
    """(time, RMS) for every decoded audio frame."""
    out = []
    with av.open(path) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            pcm = frame.to_ndarray().astype(np.float64)
            rms = float(np.sqrt(np.mean(pcm**2)))
            out.append((float(frame.pts * stream.time_base), rms))
    return out


def runs(kinds: list[tuple[float, str]]) -> list[tuple[str, float]]:
    """Consecutive stretches of one kind, with their length in seconds."""
    stretches: list[tuple[str, float]] = []
    start = kinds[0][0]
    for (_, kind), (t_next, kind_next) in itertools.pairwise(kinds):
        if kind_next != kind:
            stretches.append((kind, t_next - start))
            start = t_next
    stretches.append((kinds[-1][1], kinds[-1][0] - start + 1 / FPS))
    return stretches


async def test_mixer_restart_keeps_outputs_connected_on_the_slate(
    show: Show, rtmp: RtmpServer
) -> None:
    app_url = rtmp.app_url()
    await show.add(id="push", kind=dist.OUTPUT_KIND_RTMP, url=app_url, stream_key="slate1")
    await show.add(id="archive", kind=dist.OUTPUT_KIND_RECORDING, segment_seconds=60)
    for name in ("push", "archive"):
        await show.wait_status(name, dist.OUTPUT_STATUS_LIVE)
    await asyncio.sleep(3)

    await show.media.stop()  # the mixer dies
    await asyncio.sleep(4)
    mixer = FakeMediaServer()
    mixer.add(Card(show.card.name, PROGRAM_YUV, fps=FPS))
    await mixer.start()
    await mixer.announce(HandleDirectory(show.bus))  # ... and comes back elsewhere
    await asyncio.sleep(4)
    for name in ("push", "archive"):
        state = (await show.command(stop=dist.OutputRef(id=name))).outputs[0]
        assert state.reconnects == 0
    await mixer.stop()

    assert not [s for s in show.states if s.status == dist.OUTPUT_STATUS_RETRYING]
    slate_frames = REGISTRY.get_sample_value(
        "baycast_distribution_slate_frames_total", {"production": show.prod}
    )
    assert slate_frames is not None and slate_frames >= 2 * FPS
    (recording,) = (show.data_dir / "recordings" / show.prod / "archive").glob("*.ts")
    pushed = rtmp.recordings("slate1")
    assert len(pushed) == 1  # one publish from start to end: the push never dropped
    for path in (str(recording), str(pushed[0])):
        kinds = picture_kinds(path)
        assert largest_gap([t for t, _ in kinds]) <= 1.5 / FPS
        stretches = runs(kinds)
        assert [k for k, _ in stretches] == ["program", "slate", "program"], stretches
        assert stretches[1][1] >= 2.0
        sound = loudness(path)
        slate_start = stretches[0][1] + kinds[0][0]
        slate_end = slate_start + stretches[1][1]
        # The last picture is held for slate_after_s (1 s) before the slate; the sound stops then.
        before = [rms for t, rms in sound if 0.5 < t < slate_start - 1.2]
        during = [rms for t, rms in sound if slate_start + 0.2 < t < slate_end - 0.2]
        after = [rms for t, rms in sound if t > slate_end + 0.5]
        # The program's tone (amplitude 0.25: RMS 0.18 decoded), allowing for a late chunk of
        # program audio on a loaded machine; pure silence under the slate.
        assert before and sum(rms > 0.1 for rms in before) >= 0.9 * len(before)
        assert during and max(during) < 1e-3
        assert after and sum(rms > 0.1 for rms in after) >= 0.9 * len(after)
