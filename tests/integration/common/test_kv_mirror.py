"""KvMirror against a real nats-server: the bucket as it is, then every change as it happens."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

from services.common.bus import Bus
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.kv_mirror import KvMirror
from tests.support.nats import NatsServer


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "the mirror did not follow"
        await asyncio.sleep(0.02)


async def test_the_mirror_holds_the_bucket_and_follows_puts_and_deletes(
    nats_server: NatsServer,
) -> None:
    bus = Bus(nats_server.url, "test-mirror")
    await bus.connect()
    name = f"mirror-{uuid.uuid4().hex[:8]}"
    bucket = await bus.kv(name, ingest_pb2.Station)
    for i in range(50):
        await bucket.put(f"s{i}", ingest_pb2.Station(id=f"s{i}", name=f"台{i}"))
    await bucket.delete("s7")
    mirror = await KvMirror.open(bus, name, ingest_pb2.Station)
    changes: list[tuple[str, bool]] = []
    mirror.on_change(lambda key, value: changes.append((key, value is not None)))
    try:
        assert len(mirror) == 49 and mirror.get("s7") is None
        assert mirror.get("s3") == ingest_pb2.Station(id="s3", name="台3")
        await bucket.put("s3", ingest_pb2.Station(id="s3", name="新台"))
        await bucket.put("new", ingest_pb2.Station(id="new"))
        await bucket.delete("s4")
        await _until(lambda: len(changes) == 3)
        assert changes == [("s3", True), ("new", True), ("s4", False)]
        assert mirror.get("s3").name == "新台"  # type: ignore[union-attr]
        assert mirror.get("s4") is None and mirror.get("new") is not None
    finally:
        await mirror.close()
        await bus.drain()


async def test_the_mirror_catches_up_after_the_server_restarts(own_nats_server: NatsServer) -> None:
    bus = Bus(own_nats_server.url, "test-mirror-restart")
    await bus.connect()
    bucket = await bus.kv("mirror-restart", ingest_pb2.Station)
    await bucket.put("gz", ingest_pb2.Station(id="gz"))
    mirror = await KvMirror.open(bus, "mirror-restart", ingest_pb2.Station, resync_s=1.0)
    try:
        own_nats_server.stop()
        own_nats_server.start()
        await _until(lambda: bus.connected, 15)
        # JetStream takes a moment to recover its streams: tries for 30 s, each bounded.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            try:
                await asyncio.wait_for(bucket.put("sz", ingest_pb2.Station(id="sz")), 2)
                break
            except Exception:
                assert asyncio.get_running_loop().time() < deadline, "JetStream did not recover"
                await asyncio.sleep(0.2)
        await _until(lambda: mirror.get("sz") is not None, 10)
    finally:
        await mirror.close()
        await bus.drain()
