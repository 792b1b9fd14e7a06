"""Fixtures of the reliability suite: a client on the bus, a real gRPC card producer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.bus import Bus

# The distribution show (a program producer, distribution, its output events) and an RTMP server.
from tests.integration.distribution.conftest import rtmp, show  # noqa: F401
from tests.support.media_source import FakeMediaServer
from tests.support.nats import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus(nats_server.url, "reliability-test")
    await b.connect()
    yield b
    await b.drain()


@pytest.fixture
async def media() -> AsyncIterator[FakeMediaServer]:
    server = await FakeMediaServer().start()
    yield server
    for card in server.cards.values():
        card.ended = True
    await server.stop()
