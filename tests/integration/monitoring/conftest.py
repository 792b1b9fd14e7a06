"""Fixtures for monitoring tests: a bus client, a live program feed, an alert recorder."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from services.common.bus import PREFIX, Bus
from services.common.gen.baycast.v1 import monitoring_pb2
from services.common.handles import HandleDirectory
from tests.integration.monitoring.program_feed import ON_TARGET_AMPLITUDE, LiveCard, LiveMediaServer
from tests.support.nats import NatsServer


@dataclass
class AlertRecorder:
    events: list[tuple[float, monitoring_pb2.Alert]] = field(default_factory=list)

    async def on_alert(self, alert: monitoring_pb2.Alert, _subject: str) -> None:
        self.events.append((time.monotonic(), alert))

    def matching(
        self, condition: str, target: str, state: int | None = None
    ) -> list[tuple[float, monitoring_pb2.Alert]]:
        return [
            (t, a)
            for t, a in self.events
            if a.condition == condition
            and a.target == target
            and (state is None or a.state == state)
        ]

    async def wait_for(
        self, condition: str, target: str, state: int, timeout: float
    ) -> tuple[float, monitoring_pb2.Alert]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.matching(condition, target, state)
            if found:
                return found[-1]
            await asyncio.sleep(0.02)
        raise AssertionError(
            f"no {condition} {state} for {target} within {timeout} s: {self.events}"
        )


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    client = Bus(nats_server.url, "monitoring-test")
    await client.connect()
    yield client
    await client.drain()


@pytest.fixture
async def alerts(bus: Bus) -> AsyncIterator[AlertRecorder]:
    recorder = AlertRecorder()
    sub = await bus.subscribe(PREFIX + "alert.*", monitoring_pb2.Alert, recorder.on_alert)
    yield recorder
    await sub.unsubscribe()


@dataclass
class ProgramFeed:
    production: str
    card: LiveCard
    server: LiveMediaServer


@pytest.fixture
async def program_feed(bus: Bus) -> AsyncIterator[ProgramFeed]:
    """A moving, on-target program `prod/<unique>/program` announced in the handle directory."""
    production = f"p{uuid.uuid4().hex[:8]}"
    card = LiveCard(f"prod/{production}/program", (120, 128, 128), amplitude=ON_TARGET_AMPLITUDE)
    server = LiveMediaServer()
    server.add(card)
    await server.start()
    directory = HandleDirectory(bus)
    await server.announce(directory)
    yield ProgramFeed(production, card, server)
    card.ended = True
    await directory.withdraw(card.name, server.endpoint)
    await server.stop()


async def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout} s")
