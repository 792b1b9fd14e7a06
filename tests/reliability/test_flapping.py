"""Fault 2: a source flaps on and off every second for 30 s: not switched back before 3 s clear.

A real gRPC producer (the test card server) stops and resumes the program source every second
for the full 30 s (15 flaps) while the program is recorded over gRPC. The mixer must hold the
last frame for the hold time, then keep the slate on program until the source has delivered for
the whole clear time: no program picture of the flapping source may appear before it has been
steady for the clear time, and the switcher state must not call it live either.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc, mixer_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_i420
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.reliability.helpers import (
    OWN_CHANNEL,
    SMALL,
    create_production,
    delete_production,
    wait_for,
)
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import close_to, yuv_at
from tests.support.nats import NatsServer
from tests.support.services import running_service

# 30 s of flapping, the mixer's start and the clear time after it, on a loaded 2-core box.
pytestmark = pytest.mark.timeout(150)

FLAP_SECONDS = 30
FLAP_PERIOD_S = 1.0  # off for a second, on for a second
CLEAR_MS = 3000
HOLD_MS = 500
# After the first loss the last picture is held for the hold time; a frame of the source later
# than this (the hold plus delivery on a loaded box, still inside the 1 s pause) is a switch back.
HELD_WINDOW_S = HOLD_MS / 1000 + 0.45
FLAPPING_YUV = (81, 90, 240)
OTHER_YUV = (145, 54, 34)


def kind(frame: media_pb2.VideoFrame) -> str:
    """What a program picture shows: the flapping card, the other card, the slate, or else."""
    image = proto_to_i420(frame)
    centre, corner = yuv_at(image, 160, 60), yuv_at(image, 4, 4)
    if close_to(centre, FLAPPING_YUV) and close_to(corner, FLAPPING_YUV):
        return "flapping"
    if close_to(centre, OTHER_YUV) and close_to(corner, OTHER_YUV):
        return "other"
    if 35 <= corner[0] <= 70 and abs(corner[1] - 128) < 12:
        return "slate"
    return f"unknown{centre}"


@dataclass
class Program:
    """Program pictures as (arrival time, what they show), classified as they arrive."""

    pictures: list[tuple[float, str]] = field(default_factory=list)

    def longest_gap(self, start: float, end: float) -> float:
        times = [t for t, _ in self.pictures if start <= t <= end]
        return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


@contextlib.asynccontextmanager
async def watching(endpoint: str, handle: str) -> AsyncIterator[Program]:
    out = Program()

    async def go() -> None:
        async with grpc.aio.insecure_channel(endpoint, options=OWN_CHANNEL) as channel:
            call = media_pb2_grpc.MediaStub(channel).Subscribe(
                media_pb2.SubscribeRequest(handle=handle, rendition=SMALL, subscriber="rel")
            )
            async for message in call:
                if message.WhichOneof("body") == "video":
                    out.pictures.append((time.monotonic(), kind(message.video)))

    task = asyncio.create_task(go())
    try:
        yield out
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await task


async def test_flapping_source_is_kept_off_program_until_clear(
    nats_server: NatsServer, bus: Bus, media: FakeMediaServer
) -> None:
    tag = uuid.uuid4().hex[:5]
    a, b, prod_id = f"flap-a-{tag}", f"flap-b-{tag}", f"flap-{tag}"
    card = media.add(Card(f"source/{a}", FLAPPING_YUV))
    media.add(Card(f"source/{b}", OTHER_YUV))
    await media.announce(HandleDirectory(bus))
    showing: list[tuple[float, str]] = []

    async def on_state(state: mixer_pb2.MixerState, _subject: str) -> None:
        status = {"held": "live"}.get(state.showing.get(a, ""), state.showing.get(a, ""))
        if not showing or showing[-1][1] != status:
            showing.append((time.monotonic(), status))

    sub = await bus.subscribe(
        subject("prod", prod_id, "mixer", "state"), mixer_pb2.MixerState, on_state
    )
    flaps: list[tuple[float, float]] = []  # (lost, back)
    async with running_service(
        MixerService, MixerSettings, nats_server.url, unready_seconds=0.0, lease_renew_seconds=0.3
    ) as mixer:
        production = mixer_pb2.Production(
            id=prod_id,
            name="flap",
            width=1280,
            height=720,
            fps=25,
            hold_ms=HOLD_MS,
            clear_ms=CLEAR_MS,
            sources=[
                mixer_pb2.ProductionSource(id=a, name="广州台"),
                mixer_pb2.ProductionSource(id=b, name="深圳台"),
            ],
        )
        try:
            await create_production(bus, production)
            await wait_for(lambda: bool(showing) and showing[-1][1] == "live", 10, "a live")
            async with watching(mixer.grpc_endpoint, f"prod/{prod_id}/program") as program:
                await wait_for(
                    lambda: any(k == "flapping" for _, k in program.pictures[-5:]),
                    10,
                    "the flapping source's pictures on program",
                )
                started = time.monotonic()
                # Fixed 1 s steps on the monotonic clock: a late wake-up does not stretch the run.
                for n in range(int(FLAP_SECONDS / (2 * FLAP_PERIOD_S))):
                    await asyncio.sleep(
                        max(0.0, started + 2 * n * FLAP_PERIOD_S - time.monotonic())
                    )
                    card.paused = True
                    lost = time.monotonic()
                    await asyncio.sleep(
                        max(0.0, started + (2 * n + 1) * FLAP_PERIOD_S - time.monotonic())
                    )
                    card.paused = False
                    flaps.append((lost, time.monotonic()))
                last_back = flaps[-1][1]
                flapped_for = last_back + FLAP_PERIOD_S - started  # its last second is on
                await wait_for(lambda: showing[-1][1] == "live", 10, "a back after clear")
                await wait_for(
                    lambda: any(k == "flapping" for t, k in program.pictures if t > last_back),
                    10,
                    "the flapping source's pictures back on program",
                )
                await asyncio.sleep(0.5)
        finally:
            await delete_production(bus, prod_id)
    await sub.unsubscribe()

    first_loss = flaps[0][0]

    def steady_for(t: float) -> float:
        """How long the source had been delivering without a pause at `t` (0 while paused)."""
        if any(lost <= t < back for lost, back in flaps):
            return 0.0
        return t - max(back for _, back in flaps if back <= t)

    # Pictures of the flapping source after the held ones, and how long it had been steady.
    switched_back_pictures = [
        (round(t - first_loss, 2), round(steady_for(t), 2))
        for t, k in program.pictures
        if k == "flapping" and t > first_loss + HELD_WINDOW_S and steady_for(t) < CLEAR_MS / 1000
    ]
    during = [(t, k) for t, k in program.pictures if first_loss <= t <= last_back]
    kinds = {k: sum(1 for _, x in during if x == k) for k in {x for _, x in during}}
    back_picture = next(
        t for t, k in program.pictures if k == "flapping" and t > first_loss + HELD_WINDOW_S
    )
    during_states = [(t, s) for t, s in showing if first_loss < t < last_back + CLEAR_MS / 1e3]
    switched_back_states = [round(t - first_loss, 2) for t, s in during_states if s == "live"]
    back_state = next(t for t, s in showing if t > first_loss and s == "live")
    gap = program.longest_gap(first_loss, last_back)
    print(
        f"\nfault 2: {len(flaps)} flaps in {flapped_for:.1f} s; program pictures during them:"
        f" {kinds}, {len(switched_back_pictures)} of the flapping source before"
        f" {CLEAR_MS / 1000:g} s steady, longest gap {gap * 1000:.0f} ms; switcher state:"
        f" {len(switched_back_states)} switches back; back on program"
        f" {back_picture - last_back:.2f} s (picture), {back_state - last_back:.2f} s (state)"
        f" after it steadied (clear time {CLEAR_MS / 1000:g} s)"
    )
    assert len(flaps) == FLAP_SECONDS // 2
    assert flapped_for >= FLAP_SECONDS
    assert switched_back_pictures == [], switched_back_pictures
    assert switched_back_states == [], during_states
    # The slate from the end of the first hold to the last return, at (most of) 25 fps.
    assert kinds.get("slate", 0) >= 0.8 * 25 * (last_back - first_loss - HELD_WINDOW_S), kinds
    assert not [k for k in kinds if k.startswith("unknown")], kinds
    assert gap < 1.0  # the program kept its clock through the flaps
    assert CLEAR_MS / 1000 <= back_picture - last_back <= CLEAR_MS / 1000 + 1.0
    assert CLEAR_MS / 1000 <= back_state - last_back <= CLEAR_MS / 1000 + 1.0
