"""HLS served by the service: the playlist and segments decode; viewers and requests counted."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import av
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from tests.integration.distribution.conftest import FPS, HEIGHT, PROGRAM_YUV, WIDTH, Show


def metric(text: str, name: str, production: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("production") == production:
                return float(sample.value)
    raise AssertionError(f"no {name} for {production}")


async def test_hls_playlist_and_segments_decode_and_viewers_are_counted(show: Show) -> None:
    await show.add(id="web", kind=dist.OUTPUT_KIND_HLS)
    base = f"http://127.0.0.1:{show.service.http.port}"
    url = f"{base}/hls/{show.prod}/index.m3u8"
    async with aiohttp.ClientSession() as http:
        playlist = ""
        for _ in range(150):
            async with http.get(url, headers={"User-Agent": "viewer-a"}) as resp:
                if resp.status == 200:
                    playlist = await resp.text()
                    if playlist.count("#EXTINF") >= 2:
                        break
            await asyncio.sleep(0.1)
        assert resp.headers["Content-Type"] == "application/vnd.apple.mpegurl"
        assert "#EXT-X-TARGETDURATION:2" in playlist
        segments = [line for line in playlist.splitlines() if line and not line.startswith("#")]
        assert len(segments) >= 2

        for name in segments[:2]:
            async with http.get(
                f"{base}/hls/{show.prod}/{name}", headers={"User-Agent": "viewer-a"}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "video/mp2t"
                data = await resp.read()
            with av.open(io.BytesIO(data)) as container:
                video = container.streams.video[0]
                assert (video.codec_context.width, video.codec_context.height) == (WIDTH, HEIGHT)
                assert container.streams.audio[0].codec_context.sample_rate == 48_000
                frames = [f.to_ndarray() for f in container.decode(video)]
            assert len(frames) == 2 * FPS  # 2 s segments
            assert abs(int(np.median(frames[-1][:HEIGHT])) - PROGRAM_YUV[0]) <= 3

        async with http.get(url, headers={"User-Agent": "viewer-b"}) as resp:
            assert resp.status == 200
        async with http.get(url + "?session=phone-1", headers={"User-Agent": "viewer-b"}) as resp:
            assert resp.status == 200
        for bad in ("../secret.ts", "index.txt", "nope.ts"):
            async with http.get(f"{base}/hls/{show.prod}/{bad}") as resp:
                assert resp.status == 404
        async with http.get(f"{base}/metrics") as resp:
            text = await resp.text()
    # viewer-a, viewer-b (same address, other agent) and the phone's session: three viewers.
    assert metric(text, "baycast_distribution_hls_viewers", show.prod) == 3
    assert metric(text, "baycast_distribution_hls_segment_requests_total", show.prod) == 2
    assert metric(text, "baycast_distribution_hls_playlist_requests_total", show.prod) >= 3


async def test_hls_restart_continues_the_playlist_with_a_discontinuity(show: Show) -> None:
    await show.add(id="web", kind=dist.OUTPUT_KIND_HLS)
    playlist = show.data_dir / "hls" / show.prod / "index.m3u8"
    for _ in range(100):
        if playlist.exists() and playlist.read_text().count("#EXTINF") >= 2:
            break
        await asyncio.sleep(0.1)
    await show.command(stop=dist.OutputRef(id="web"))
    before = playlist.read_text()
    await show.command(start=dist.OutputRef(id="web"))
    for _ in range(100):
        if playlist.read_text().count("#EXTINF") >= before.count("#EXTINF") + 2:
            break
        await asyncio.sleep(0.1)
    after = playlist.read_text()
    names = [line for line in after.splitlines() if line and not line.startswith("#")]
    assert len(names) == len(set(names)) and len(names) >= 4
    assert "#EXT-X-DISCONTINUITY" in after
    assert all((playlist.parent / name).exists() for name in names)


async def test_hls_ladder_serves_a_master_playlist_over_each_rendition(show: Show) -> None:
    await show.add(id="web", kind=dist.OUTPUT_KIND_HLS, ladder=[180])
    base = f"http://127.0.0.1:{show.service.http.port}/hls/{show.prod}"
    folder = show.data_dir / "hls" / show.prod
    for _ in range(150):
        if all(
            (folder / f"stream_{i}.m3u8").exists()
            and (folder / f"stream_{i}.m3u8").read_text().count("#EXTINF") >= 2
            for i in (0, 1)
        ):
            break
        await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/index.m3u8") as resp:
            master = await resp.text()
        assert "#EXT-X-STREAM-INF" in master
        assert "RESOLUTION=640x360" in master and "RESOLUTION=320x180" in master
        variants = [line for line in master.splitlines() if line and not line.startswith("#")]
        sizes = []
        for variant in variants:
            async with http.get(f"{base}/{variant}") as resp:
                playlist = await resp.text()
            segment = next(line for line in playlist.splitlines() if line.endswith(".ts"))
            async with http.get(f"{base}/{segment}") as resp:
                data = await resp.read()
            with av.open(io.BytesIO(data)) as container:
                video = container.streams.video[0]
                frames = [f.to_ndarray() for f in container.decode(video)]
                sizes.append((video.codec_context.width, video.codec_context.height))
                assert container.streams.audio[0].codec_context.sample_rate == 48_000
            assert len(frames) == 2 * FPS
            assert abs(int(np.median(frames[-1][: sizes[-1][1]])) - PROGRAM_YUV[0]) <= 3
    assert sorted(sizes) == [(320, 180), (WIDTH, HEIGHT)]
