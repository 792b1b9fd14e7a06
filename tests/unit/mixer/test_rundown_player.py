"""The rundown player's stop: a segment's cue that swallowed its cancellation still ends."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog.testing

from services.common.gen.baycast.v1 import mixer_pb2, rundown_pb2
from services.mixer.rundown import RundownPlayer

RCmd = rundown_pb2.RundownCommand


class Store:
    def __init__(self, status: rundown_pb2.RundownStatus) -> None:
        self.status = status

    async def get(self, key: str) -> Any:
        return type("Entry", (), {"value": self.status})()

    async def put(self, key: str, value: rundown_pb2.RundownStatus) -> None:
        self.status = value


class Bus:
    """Publishes nothing; the as-run stream is unreachable (the player logs and goes on)."""

    class nc:  # stands in for the NATS client
        @staticmethod
        def jetstream() -> Any:
            raise ConnectionError("no NATS here")

    async def publish(self, subject: str, message: object) -> None:
        return None


async def test_a_load_ends_a_segment_whose_cue_swallowed_the_cancellation() -> None:
    production = mixer_pb2.Production(
        id="show", sources=[mixer_pb2.ProductionSource(id="a"), mixer_pb2.ProductionSource(id="b")]
    )
    plan = rundown_pb2.Rundown(
        segments=[
            rundown_pb2.RundownSegment(title="one", duration_ms=50, program="a"),
            rundown_pb2.RundownSegment(title="two", duration_ms=50, program="b"),
        ]
    )
    applied: list[mixer_pb2.MixerCommand] = []
    cued = asyncio.Event()

    async def stubborn(command: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        applied.append(command)
        cued.set()
        # As 3.11's wait_for in nats-py's request does when the reply meets the cancellation:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        await asyncio.sleep(30)
        return mixer_pb2.MixerState()

    # Another mixer was playing segment one: this one picks it up and fires two when it is due.
    status = rundown_pb2.RundownStatus(
        production="show", rundown=plan, segment=0, running=True, segment_started_us=0
    )
    player = RundownPlayer(production, Bus(), Store(status), stubborn)  # type: ignore[arg-type]
    with structlog.testing.capture_logs():
        await player.start()
        async with asyncio.timeout(5):
            await cued.wait()
        playing = player._task
        assert playing is not None and applied[0].cut.source == "b"
        load = asyncio.create_task(player.command(RCmd(load=plan)))
        await asyncio.wait({load}, timeout=2)  # not a timeout that cancels: that would stop it
        if not load.done():
            playing.cancel()  # let the test end
        assert load.done(), "the load waits on the segment's task"
        reply = load.result()
    assert reply.segment == -1 and not reply.running
    assert playing.done() and player._task is None
    assert len(applied) == 1
