"""Fixtures of the reliability suite: a client on the bus.

Sources are real stations (`baycast station` processes publishing to an ingest process, see
`helpers.live_station`); no test of this suite stands in for a service that can run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.common.bus import Bus
from tests.support.nats import NatsServer


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus(nats_server.url, "reliability-test")
    await b.connect()
    yield b
    await b.drain()
