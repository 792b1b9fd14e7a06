"""Item 13: damaged H.264 and corrupt RTMP input.

Ffmpeg pushes, over RTMP to an ingest process, an FLV whose H.264 tags were damaged in this test
(every third coded picture cut to a third, the next one with bits flipped, its length prefixes
included), while a second station pushes the same clip undamaged; then raw garbage hits the RTMP
port. The damaged source must report decode errors in its stats yet keep delivering pictures,
the clean source must see no error and keep its frame rate, and ingest must stay up.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2
from tests.reliability.helpers import add_station, ingest_process, processes, wait_for
from tests.support.ffmpeg_push import FFMPEG, encoder_args
from tests.support.nats import NatsServer

pytestmark = pytest.mark.timeout(120)

CLIP_S = 8
FLV_HEADER = 13
TAG_HEADER = 11
VIDEO_TAG = 9
AVC_NALU = 1
AVC_PAYLOAD = 5  # codec byte, packet type, composition time


def flv_tags(data: bytes) -> Iterator[tuple[int, bytes, bytes]]:
    """(type, 11-byte header, body) of each tag of an FLV file."""
    pos = FLV_HEADER
    while pos + TAG_HEADER <= len(data):
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        yield (
            data[pos],
            data[pos : pos + TAG_HEADER],
            data[pos + TAG_HEADER : pos + TAG_HEADER + size],
        )
        pos += TAG_HEADER + size + 4


def damage(clean: bytes, seed: int = 13) -> tuple[bytes, int]:
    """The FLV with every third H.264 picture truncated and the next bit-flipped."""
    rng = random.Random(seed)
    out = bytearray(clean[:FLV_HEADER])
    pictures = damaged = 0
    for kind, header, body in flv_tags(clean):
        if kind == VIDEO_TAG and len(body) > AVC_PAYLOAD + 8 and body[1] == AVC_NALU:
            pictures += 1
            b = bytearray(body)
            if pictures % 3 == 0:
                b = b[: AVC_PAYLOAD + (len(b) - AVC_PAYLOAD) // 3]
                damaged += 1
            elif pictures % 3 == 1 and pictures > 1:
                for _ in range(24):
                    i = rng.randrange(AVC_PAYLOAD, len(b))
                    b[i] ^= 1 << rng.randrange(8)
                damaged += 1
            body = bytes(b)
            header = header[:1] + len(body).to_bytes(3, "big") + header[4:]
        out += header + body + (TAG_HEADER + len(body)).to_bytes(4, "big")
    return bytes(out), damaged


async def run(*argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    return await proc.wait()


async def push(path: Path, url: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-i", str(path),
        "-c", "copy", "-f", "flv", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def garbage(port: int) -> list[str]:
    """Corrupt RTMP: random bytes, then a valid C0/C1 followed by nonsense chunks."""
    outcomes = []
    rng = random.Random(7)
    for payload in (
        bytes(rng.randrange(256) for _ in range(4096)),
        b"\x03" + bytes(1536) + bytes(rng.randrange(256) for _ in range(8192)),
        b"\x03" + os.urandom(1536) + b"\xff" * 65536,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(payload)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 10)
            outcomes.append(f"closed after {len(data)} bytes")
        except (ConnectionError, TimeoutError) as exc:
            outcomes.append(type(exc).__name__)
        finally:
            writer.close()
    return outcomes


async def test_damaged_h264_and_corrupt_rtmp(
    nats_server: NatsServer, bus: Bus, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:5]
    bad, good = f"dmg-{tag}", f"ok-{tag}"
    clean = tmp_path / "clean.flv"
    args = [a for a in encoder_args(CLIP_S, (320, 180)) if a != "-re"]  # as fast as it can
    assert await run(*args, "-f", "flv", str(clean)) == 0
    damaged, damaged_pictures = damage(clean.read_bytes())
    broken = tmp_path / "damaged.flv"
    broken.write_bytes(damaged)

    ingest = ingest_process(nats_server.url, tmp_path)
    rtmp_port = int(ingest.env["BAYCAST_INGEST_RTMP_ADDR"].rpartition(":")[2])
    latest: dict[str, control_pb2.SourceStats] = {}
    peak_fps: dict[str, list[float]] = {bad: [], good: []}

    async def on_stats(stats: control_pb2.SourceStats, _subject: str) -> None:
        latest[stats.source] = stats
        peak_fps[stats.source].append(stats.fps)

    subs = [
        await bus.subscribe(subject("source", s, "stats"), control_pb2.SourceStats, on_stats)
        for s in (bad, good)
    ]
    with processes(ingest):
        token_bad = await add_station(bus, bad, "损坏台")
        token_good = await add_station(bus, good, "完好台")
        pushes = [
            await push(broken, f"rtmp://127.0.0.1:{rtmp_port}/live/{token_bad}"),
            await push(clean, f"rtmp://127.0.0.1:{rtmp_port}/live/{token_good}"),
        ]
        await wait_for(lambda: bad in latest and good in latest, 20, "both sources online")
        outcomes = await garbage(rtmp_port)
        await wait_for(lambda: latest[bad].decode_errors > 0, 20, "decode errors reported")
        codes = [await asyncio.wait_for(p.wait(), 40) for p in pushes]
        alive = ingest.proc is not None and ingest.proc.poll() is None and ingest.ready()
    for sub in subs:
        await sub.unsubscribe()

    steady = [f for f in peak_fps[good][2:-2]]  # without the first and last seconds
    print(
        f"\nitem 13: {damaged_pictures} damaged pictures -> {latest[bad].decode_errors} decode"
        f" errors reported, damaged source at up to {max(peak_fps[bad]):.0f} fps; clean source"
        f" {latest[good].decode_errors} errors, {min(steady):.0f}-{max(steady):.0f} fps;"
        f" garbage connections: {outcomes}; ingest alive: {alive}"
    )
    assert latest[bad].decode_errors > 0
    assert max(peak_fps[bad]) > 5  # the undamaged pictures still come through
    assert latest[good].decode_errors == 0
    assert steady and min(steady) >= 20
    assert alive
    assert codes == [0, 0]
