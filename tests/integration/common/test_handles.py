"""The handle directory on a real nats-server: a withdrawal removes only its own announcement."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from services.common.bus import Bus
from services.common.handles import HandleDirectory
from tests.support.nats import NatsServer


async def test_a_withdrawal_never_removes_a_successor_s_announcement(
    nats_server: NatsServer, monkeypatch: Any
) -> None:
    """The old owner reads its own announcement, then the new owner announces before the old
    one deletes: the delete is refused (it names the revision it read) and the new stays."""
    bus = Bus(nats_server.url, "handles-test")
    await bus.connect()
    name = f"gfx/handles-{uuid.uuid4().hex[:6]}"
    directory = HandleDirectory(bus)
    try:
        await directory.announce(name, "10.0.0.1:9103")
        bucket = await directory.bucket()
        read: Callable[[str], Awaitable[Any]] = bucket.get

        async def read_then_successor_announces(key: str) -> Any:
            entry = await read(key)
            await HandleDirectory(bus).announce(name, "10.0.0.2:9103")
            return entry

        monkeypatch.setattr(bucket, "get", read_then_successor_announces)
        await directory.withdraw(name, "10.0.0.1:9103")
        monkeypatch.undo()
        assert await directory.resolve(name) == "10.0.0.2:9103"
        # Its own announcement, unchanged since it was read, is withdrawn.
        await directory.withdraw(name, "10.0.0.2:9103")
        assert await directory.resolve(name) is None
    finally:
        await bus.drain()
