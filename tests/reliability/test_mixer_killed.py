"""Fault 5: the mixer process is killed (SIGKILL) mid-show.

A mixer process runs a production whose program distribution (in this process) encodes and
pushes over RTMP to a real nginx-rtmp. The mixer is killed and, 2 s later, started again. The
push must stay connected (one publish from start to end, no reconnect), carry the slate while
the program is gone (not black, no gap), and the mixer must answer with its switcher state and
send program pictures again within 5 s of its restart.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
import uuid
from pathlib import Path

import av
import numpy as np
import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.handles import HandleDirectory
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from tests.reliability.helpers import (
    create_production,
    delete_production,
    mixer_command,
    mixer_process,
    processes,
    recording,
    retry,
    wait_for,
)
from tests.support.media_source import Card, FakeMediaServer
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer
from tests.support.services import running_service

pytestmark = pytest.mark.timeout(150)

FPS = 25
CARD_YUV = (81, 90, 240)
DOWN_S = 2.0
RESUME_TARGET_S = 5.0
Cmd = mixer_pb2.MixerCommand


def picture_kinds(path: Path) -> list[tuple[float, str]]:
    """(time, 'program' | 'black' | 'slate') of every decoded picture of the pushed stream."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or stream.time_base is None:
                continue
            y = frame.to_ndarray(format="gray")
            corner, mean = int(np.median(y[:16, :16])), float(y.mean())
            if abs(corner - CARD_YUV[0]) <= 6:
                kind = "program"
            elif mean < 20:
                kind = "black"
            else:
                kind = "slate"
            out.append((float(frame.pts * stream.time_base), kind))
    return out


async def test_killed_mixer_outputs_stay_on_the_slate_and_state_returns(
    nats_server: NatsServer, bus: Bus, media: FakeMediaServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:5]
    prod_id, a = f"mk-{tag}", f"mk-a-{tag}"
    media.add(Card(f"source/{a}", CARD_YUV))
    await media.announce(HandleDirectory(bus))
    mixer = mixer_process(nats_server.url, tmp_path)
    rtmp = RtmpServer(tmp_path / "rtmp").start()
    try:
        with processes(mixer):
            await create_production(
                bus,
                mixer_pb2.Production(
                    id=prod_id,
                    name="断电",
                    width=1280,
                    height=720,
                    sources=[mixer_pb2.ProductionSource(id=a, name="广州台")],
                ),
            )
            before = await mixer_command(bus, prod_id, Cmd(audio=Cmd.Audio(gain_db=-6)))
            async with running_service(
                DistributionService,
                DistributionSettings,
                nats_server.url,
                data_dir=str(tmp_path / "data"),
                width=640,
                height=360,
                fps=FPS,
                video_bitrate_kbps=600,
                x264_preset="ultrafast",
            ):

                async def dist_command(**kw: object) -> dist.DistReply:
                    return await bus.request(
                        f"baycast.v1.prod.{prod_id}.dist.cmd",
                        dist.DistCommand(production=prod_id, **kw),  # type: ignore[arg-type]
                        dist.DistReply,
                        timeout=10,
                    )

                spec = dist.OutputSpec(
                    id="push",
                    kind=dist.OUTPUT_KIND_RTMP,
                    url=rtmp.app_url(),
                    stream_key=f"k{tag}",
                    enabled=True,
                )
                await dist_command(add=dist.AddOutput(output=spec))

                async def live() -> None:
                    reply = await dist_command(list=dist.ListOutputs())
                    assert reply.outputs[0].status == dist.OUTPUT_STATUS_LIVE

                await retry(live, seconds=30)
                await asyncio.sleep(3)

                mixer.signal(signal.SIGKILL)
                await asyncio.to_thread(mixer.wait, 5)
                await asyncio.sleep(DOWN_S)
                restarted = time.monotonic()
                assert mixer.proc is not None
                await asyncio.to_thread(mixer.start)
                after = await retry(lambda: mixer_command(bus, prod_id, Cmd(get=Cmd.Get())))
                state_back = time.monotonic() - restarted
                endpoint = f"127.0.0.1:{mixer.grpc_port}"
                attempts = 0

                async def program_frame() -> None:
                    nonlocal attempts
                    attempts += 1
                    async with recording(endpoint, f"prod/{prod_id}/program") as rec:
                        await wait_for(lambda: bool(rec.frames), 2, "a program frame")

                await retry(program_frame, seconds=10)
                program_back = time.monotonic() - restarted
                await asyncio.sleep(4)
                stopped = await dist_command(stop=dist.OutputRef(id="push"))
            await delete_production(bus, prod_id)
        pushed = rtmp.recordings(f"k{tag}")
        kinds = picture_kinds(pushed[0]) if pushed else []
    finally:
        rtmp.cleanup()

    runs = [(k, len(list(g))) for k, g in itertools.groupby(kind for _, kind in kinds)]
    gap = max((b - a for (a, _), (b, _) in itertools.pairwise(kinds)), default=0.0)
    print(
        f"\nfault 5: mixer down {DOWN_S:g} s; switcher state back {state_back:.2f} s and program"
        f" pictures {program_back:.2f} s after its restart; RTMP push: {len(pushed)} publish,"
        f" {stopped.outputs[0].reconnects} reconnects, pictures {runs},"
        f" largest gap {gap * 1000:.0f} ms; {attempts} subscribe attempt(s)"
    )
    assert len(pushed) == 1
    assert stopped.outputs[0].reconnects == 0
    assert [k for k, _ in runs] == ["program", "slate", "program"], runs
    assert gap <= 1.5 / FPS
    assert program_back <= RESUME_TARGET_S
    assert list(after.switcher.audio) == list(before.switcher.audio)
    assert after.switcher.master_gain_db == before.switcher.master_gain_db
