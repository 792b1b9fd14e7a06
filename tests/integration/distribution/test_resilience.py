"""Each output fails and recovers alone; the recording and HLS beside it never notice."""

from __future__ import annotations

import asyncio

import pytest

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from tests.integration.distribution.conftest import FPS, Show
from tests.integration.distribution.media_check import (
    audio_seconds,
    hls_segments,
    largest_gap,
    video_times,
)
from tests.support.rtmp import RtmpServer, probe

FRAME = 1 / FPS


@pytest.mark.parametrize("show", [{"hls_list_size": 30}], indirect=True)
async def test_rtmp_server_killed_for_5_s_outputs_resume_and_others_show_no_gap(
    show: Show, rtmp: RtmpServer
) -> None:
    app_url = rtmp.app_url()
    await show.add(id="push", kind=dist.OUTPUT_KIND_RTMP, url=app_url, stream_key="k1")
    await show.add(id="web", kind=dist.OUTPUT_KIND_HLS)
    await show.add(id="archive", kind=dist.OUTPUT_KIND_RECORDING, segment_seconds=4)
    for name in ("push", "web", "archive"):
        await show.wait_status(name, dist.OUTPUT_STATUS_LIVE)
    await asyncio.sleep(2)

    rtmp.kill()
    retrying = await show.wait_status("push", dist.OUTPUT_STATUS_RETRYING, timeout=15)
    assert retrying.reason and retrying.retry_in_s > 0
    await asyncio.sleep(5)
    rtmp.start()
    resumed = await show.wait_status("push", dist.OUTPUT_STATUS_LIVE, timeout=20)
    assert resumed.reconnects == 1 and resumed.attempts >= 2
    await asyncio.sleep(3)

    for name in ("push", "web", "archive"):
        await show.command(stop=dist.OutputRef(id=name))
    archive = await show.state("archive")
    web = await show.state("web")
    assert (await show.state("push")).reconnects == 1
    assert archive.reconnects == 0 and web.reconnects == 0
    statuses = {s.status for s in show.states if s.id in ("web", "archive")}
    assert dist.OUTPUT_STATUS_RETRYING not in statuses

    # The recording: several files (split by duration), decoding start to end with no gap.
    files = sorted((show.data_dir / "recordings" / show.prod / "archive").glob("*.ts"))
    assert len(files) >= 3
    times = video_times(files)
    assert largest_gap(times) <= FRAME * 1.5
    assert abs((times[-1] - times[0] + FRAME) - archive.media_seconds) < 0.5
    assert abs(len(times) / FPS - archive.media_seconds) < 0.5
    assert abs(sum(audio_seconds(f) for f in files) - archive.media_seconds) < 0.5

    # HLS: every segment of the playlist decodes, back to back.
    playlist = show.data_dir / "hls" / show.prod / "index.m3u8"
    text = playlist.read_text()
    assert "#EXT-X-DISCONTINUITY" not in text
    segments = hls_segments(playlist)
    assert len(segments) >= 5
    hls_times = video_times(segments)
    assert largest_gap(hls_times) <= FRAME * 1.5
    assert abs(len(hls_times) / FPS - web.media_seconds) < 2.1  # the last segment may be open

    # The push: one recording before the crash, one after; the second decodes.
    recorded = rtmp.recordings("k1")
    assert len(recorded) == 2
    info = probe(recorded[-1])
    assert float(info["format"]["duration"]) > 2.0


async def test_a_rejected_url_fails_after_one_attempt_with_the_reason(
    show: Show, rtmp: RtmpServer
) -> None:
    wrong = rtmp.app_url("no-such-app")
    await show.add(id="wrong", kind=dist.OUTPUT_KIND_RTMP, url=wrong, stream_key="sekrit-key")
    failed = await show.wait_status("wrong", dist.OUTPUT_STATUS_FAILED)
    assert failed.attempts == 1
    assert "Input/output error" in failed.reason
    assert "sekrit-key" not in failed.reason + failed.url
    await asyncio.sleep(1.5)  # no retry storm: still one attempt
    assert (await show.state("wrong")).attempts == 1
    seen = [dist.OutputStatus.Name(s.status) for s in show.states if s.id == "wrong"]
    assert seen == ["OUTPUT_STATUS_CONNECTING", "OUTPUT_STATUS_FAILED"]
