"""Fixtures for mixer integration tests: a real NATS, a real gRPC card producer, the mixer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.handles import HandleDirectory
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import admin, command
from tests.support.nats import NatsServer
from tests.support.services import running_service

CreateProduction = Callable[[mixer_pb2.Production], Awaitable[mixer_pb2.Production]]


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    b = Bus(nats_server.url, "mixer-test")
    await b.connect()
    yield b
    await b.drain()


@pytest.fixture
async def media(bus: Bus) -> AsyncIterator[FakeMediaServer]:
    server = await FakeMediaServer().start()
    yield server
    for card in server.cards.values():
        card.ended = True
    await server.stop()


@pytest.fixture
async def announce(bus: Bus, media: FakeMediaServer) -> Callable[[], Awaitable[None]]:
    directory = HandleDirectory(bus)

    async def go() -> None:
        await media.announce(directory)

    return go


@pytest.fixture
async def mixer(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[MixerService]:
    """The mixer, with a clip cache of its own (the default one is shared by the machine)."""
    async with running_service(
        MixerService,
        MixerSettings,
        nats_server.url,
        lease_renew_seconds=0.3,
        drain_seconds=5.0,
        unready_seconds=0.0,
        media_cache_dir=str(tmp_path / "media-cache"),
    ) as service:
        yield service


@pytest.fixture
async def create_production(bus: Bus) -> AsyncIterator[CreateProduction]:
    created: list[str] = []

    async def create(production: mixer_pb2.Production) -> mixer_pb2.Production:
        reply = await admin(bus, mixer_pb2.ProductionCommand(create=production))
        created.append(production.id)
        # Wait until an instance has taken the production's lease and answers its commands.
        get = mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get())
        await command(bus, production.id, get)
        return reply.productions[0]

    yield create
    # Straight from the bucket: the mixer that served the admin subject may be gone by now.
    store = await ProductionStore.open(bus)
    for prod_id in created:
        with contextlib.suppress(Exception):
            await store.delete(prod_id)
