"""Solid-colour gRPC sources in their own process: `python -m bench.card_peer NATS PREFIX N`.

The tests' card producer (`tests/support/media_source.py`): each card served at the size each
subscriber asks (the mixer asks for box sizes), announced in the handle directory as
`source/<PREFIX>-<station>`. Runs until its standard input closes or it is terminated.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from services.common.bus import Bus
from services.common.handles import HandleDirectory
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import cards


async def serve(nats_url: str, prefix: str, count: int) -> None:
    server = await FakeMediaServer().start()
    for card in cards(prefix, count):
        server.add(card)
    bus = Bus(nats_url, f"bench-cards-{prefix}")
    await bus.connect()
    await server.announce(HandleDirectory(bus))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def stdin_ready() -> None:
        if not sys.stdin.read(1):
            stop.set()

    loop.add_reader(sys.stdin.fileno(), stdin_ready)
    print("ready", flush=True)
    await stop.wait()
    for card in server.cards.values():
        card.ended = True
    await server.stop()
    await bus.drain()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], sys.argv[2], int(sys.argv[3])))
