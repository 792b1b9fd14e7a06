"""Fault 5: the mixer process is killed (SIGKILL) mid-show.

A `baycast station` process publishes over WHIP to an ingest process; a mixer process runs a
production with it on program; a distribution process encodes the program and pushes it over
RTMP to a real nginx-rtmp. The mixer is killed and, 2 s later, started again. The push must stay
connected (one publish from start to end, no reconnect), carry distribution's slate while the
program is gone (not black, no gap), and the mixer must answer with its switcher state and send
program pictures again within 5 s of its restart; the push then carries the station again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2
from services.distribution.settings import DEFAULT_SLATE_AFTER_S as SLATE_AFTER_S
from tests.reliability.helpers import (
    PUSH_FPS,
    corner_yuv,
    create_production,
    delete_production,
    distribution_process,
    distribution_slate_corner,
    ingest_process,
    live_station,
    mixer_command,
    mixer_process,
    mixer_slate_corner,
    processes,
    recording,
    retry,
    shows_card,
    wait_for,
)
from tests.support.mixer import close_to
from tests.support.nats import NatsServer
from tests.support.rtmp import RtmpServer

pytestmark = pytest.mark.timeout(150)

DOWN_S = 2.0
RESUME_TARGET_S = 5.0
# Near the figures of docs/RELIABILITY.md (row 5), with room for a busy 2-core box: once the
# restarted process said it was ready (its interpreter's start, 1.4-2.8 s on the busy box, is not
# the mixer's to shorten) the switcher state answered 0.00-0.21 s and program pictures came
# 0.05-0.27 s after it.
STATE_BACK_WITHIN_S = 0.5
PROGRAM_BACK_WITHIN_S = 0.6
# Distribution's subscription to the program finds it again within its resubscribe interval
# (0.5 s) and the gRPC reconnect backoff (capped at 1 s by common's channel options); measured
# 0.55-1.25 s after the mixer sent the program again.
REATTACH_WITHIN_S = 2.0
# The station's feed is not this fault: a hold longer than the default 0.5 s keeps a station
# starved for a moment on the busy box from being slated (and then kept off for the clear time).
HOLD_MS = 1500
# Program pictures the push must carry before the kill, and again after the restart.
PROGRAM_RUN = 2 * PUSH_FPS
DIST_SLATE = distribution_slate_corner()
MIXER_SLATE = mixer_slate_corner()
Cmd = mixer_pb2.MixerCommand


def picture_kinds(path: Path, station: str) -> list[tuple[float, str]]:
    """(time, what it shows) of every picture of a pushed recording decoded so far: 'program'
    (the station's card), 'slate' (distribution's), 'mixer-slate', 'black' or 'unknown'. A
    recording still being written is read up to where it ends now."""
    out: list[tuple[float, str]] = []
    with contextlib.suppress(av.error.FFmpegError, EOFError), av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            if frame.pts is None or stream.time_base is None:
                continue
            image = frame.to_ndarray(format="yuv420p")
            corner = corner_yuv(image)
            if shows_card(image, station, tolerance=12):
                kind = "program"
            elif close_to(corner, DIST_SLATE, 8):
                kind = "slate"
            elif close_to(corner, MIXER_SLATE, 8):
                kind = "mixer-slate"
            elif float(image[: image.shape[0] * 2 // 3].mean()) < 20:
                kind = "black"
            else:
                kind = f"unknown{corner}"
            out.append((float(frame.pts * stream.time_base), kind))
    return out


def runs(kinds: list[tuple[float, str]]) -> list[tuple[str, int]]:
    return [(k, len(list(g))) for k, g in itertools.groupby(kind for _, kind in kinds)]


async def test_killed_mixer_outputs_stay_on_the_slate_and_state_returns(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:5]
    prod_id, a, key = f"mk-{tag}", f"mk-a-{tag}", f"k{tag}"
    ingest = ingest_process(nats_url, tmp_path)
    mixer = mixer_process(nats_url, tmp_path)
    distribution = distribution_process(nats_url, tmp_path)
    bus = Bus(nats_url, "mixer-killed-test")
    await bus.connect()
    rtmp = RtmpServer(tmp_path / "rtmp").start()

    async def dist_command(**kw: object) -> dist.DistReply:
        async def once() -> dist.DistReply:
            return await bus.request(
                subject("prod", prod_id, "dist", "cmd"),
                dist.DistCommand(production=prod_id, **kw),  # type: ignore[arg-type]
                dist.DistReply,
                timeout=10,
            )

        for _ in range(50):  # the production is being taken by a replica: retry, as ctl does
            with contextlib.suppress(errors.Unavailable):
                return await once()
            await asyncio.sleep(0.2)
        return await once()

    async def pushed_until(
        what: str, done: Callable[[list[tuple[float, str]]], bool], seconds: float
    ) -> list[tuple[float, str]]:
        """Decode the push as nginx-rtmp records it until `done(kinds)` holds."""
        start = time.monotonic()
        while True:
            files = rtmp.recordings(key)
            kinds = await asyncio.to_thread(picture_kinds, files[0], a) if files else []
            if done(kinds):
                return kinds
            if time.monotonic() - start > seconds:
                raise TimeoutError(f"{what}: not within {seconds} s: {runs(kinds)}")
            await asyncio.sleep(0.5)

    showing: list[tuple[float, str]] = []

    async def on_state(state: mixer_pb2.MixerState, _subject: str) -> None:
        status = state.showing.get(a, "")
        if not showing or showing[-1][1] != status:
            showing.append((time.monotonic(), status))

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
    )
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.enter_context(processes(ingest, mixer, distribution))
            await stack.enter_async_context(live_station(bus, ingest, a, "广州台", tmp_path))
            await create_production(
                bus,
                mixer_pb2.Production(
                    id=prod_id,
                    name="断电",
                    width=1280,
                    height=720,
                    hold_ms=HOLD_MS,
                    sources=[mixer_pb2.ProductionSource(id=a, name="广州台")],
                ),
            )
            await wait_for(lambda: bool(showing) and showing[-1][1] == "live", 20, "a live")
            before = await mixer_command(bus, prod_id, Cmd(audio=Cmd.Audio(gain_db=-6)))
            spec = dist.OutputSpec(
                id="push",
                kind=dist.OUTPUT_KIND_RTMP,
                url=rtmp.app_url(),
                stream_key=key,
                enabled=True,
            )
            await dist_command(add=dist.AddOutput(output=spec))

            async def live() -> None:
                reply = await dist_command(list=dist.ListOutputs())
                assert reply.outputs[0].status == dist.OUTPUT_STATUS_LIVE

            await retry(live, seconds=30)
            await pushed_until(
                "the station on the push",
                lambda k: sum(1 for _, x in k if x == "program") >= PROGRAM_RUN,
                20,
            )

            mixer.signal(signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.to_thread(mixer.wait, 5)
            await asyncio.sleep(DOWN_S)
            restarted = time.monotonic()
            await asyncio.to_thread(mixer.start)
            ready_at = time.monotonic()
            after = await retry(lambda: mixer_command(bus, prod_id, Cmd(get=Cmd.Get())))
            state_back = time.monotonic() - ready_at
            endpoint = f"127.0.0.1:{mixer.grpc_port}"
            attempts = 0

            async def program_frame() -> None:
                nonlocal attempts
                attempts += 1
                async with recording(endpoint, f"prod/{prod_id}/program") as rec:
                    await wait_for(lambda: bool(rec.frames), 2, "a program frame")

            await retry(program_frame, seconds=10)
            program_back = time.monotonic() - ready_at
            restart_s = ready_at - restarted
            mixer_gone_s = ready_at + program_back - killed

            def back_on_push(kinds: list[tuple[float, str]]) -> bool:
                seen = runs(kinds)
                return len(seen) >= 3 and seen[-1][0] == "program" and seen[-1][1] >= PROGRAM_RUN

            # The push carries the station again: every picture before has been recorded.
            await pushed_until("the station back on the push", back_on_push, 20)
            stopped = await dist_command(stop=dist.OutputRef(id="push"))
            await delete_production(bus, prod_id)
        await sub.unsubscribe()
        await bus.drain()
        pushed = rtmp.recordings(key)
        kinds = picture_kinds(pushed[0], a) if pushed else []
    finally:
        rtmp.cleanup()

    seen = runs(kinds)
    gap = max((y - x for (x, _), (y, _) in itertools.pairwise(kinds)), default=0.0)
    # On the push's own clock: the program was gone from its last picture before the kill (held
    # for distribution's slate_after_s after the last one came) to its first after the restart;
    # less the time the mixer's program was gone, that is distribution's reattach.
    last_before = kinds[seen[0][1] - 1][0] if seen else 0.0
    first_after = kinds[seen[0][1] + seen[1][1]][0] if len(seen) >= 3 else 0.0
    reattach_s = first_after - last_before + SLATE_AFTER_S - mixer_gone_s
    print(
        f"\nfault 5: mixer down {DOWN_S:g} s, its process ready {restart_s:.2f} s after the"
        f" restart; switcher state back {state_back:.2f} s and program pictures"
        f" {program_back:.2f} s after that; RTMP push: {len(pushed)} publish,"
        f" {stopped.outputs[0].reconnects} reconnects, pictures {seen},"
        f" largest gap {gap * 1000:.0f} ms, the program back on it {reattach_s:.2f} s after the"
        f" mixer sent it again; {attempts} subscribe attempt(s)"
    )
    assert len(pushed) == 1
    assert stopped.outputs[0].reconnects == 0
    assert [k for k, _ in seen] == ["program", "slate", "program"], seen
    assert gap <= 1.5 / PUSH_FPS
    # The slate, and nothing else, between the held picture and the program's return.
    slate_s = seen[1][1] / PUSH_FPS
    assert abs(slate_s - (first_after - last_before)) <= 2 / PUSH_FPS, (slate_s, seen)
    assert reattach_s <= REATTACH_WITHIN_S, reattach_s
    assert restart_s + program_back <= RESUME_TARGET_S  # the target
    assert state_back <= STATE_BACK_WITHIN_S
    assert program_back <= PROGRAM_BACK_WITHIN_S
    assert list(after.switcher.audio) == list(before.switcher.audio)
    assert after.switcher.master_gain_db == before.switcher.master_gain_db
