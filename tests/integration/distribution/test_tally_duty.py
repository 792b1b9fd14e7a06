"""Tally with two distribution replicas: one sends (services/distribution/tally_duty.py).

A real ingest holds a station whose tally address is a UDP socket of the test; two distribution
replica processes follow it. Every datagram comes from one sender (one source port) while both
run; when the replica on duty is SIGKILLed, the other sends within 5 s, and from then on only it.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2
from services.distribution import tsl_umd
from services.distribution.tally_duty import SERVICE, UNIT
from services.distribution.tally_out import REFRESH_S
from tests.integration.distribution.test_replicas import replica
from tests.support.nats import NatsServer
from tests.support.station import add_station, running_ingest, station_command

pytestmark = pytest.mark.timeout(120)

HANDOVER_S = 5.0


class Device(asyncio.DatagramProtocol):
    """A TSL UMD device: each datagram with its arrival time and its sender's port."""

    def __init__(self) -> None:
        self.datagrams: list[tuple[float, int, tsl_umd.Packet]] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append((time.monotonic(), addr[1], tsl_umd.parse(data)))
        self.arrived.set()

    async def count_from(self, since: float, count: int, timeout: float) -> list[int]:
        """The sender ports of the first `count` datagrams after `since` (waits for them)."""
        async with asyncio.timeout(timeout):
            while True:
                ports = [port for at, port, _ in self.datagrams if at >= since]
                if len(ports) >= count:
                    return ports[:count]
                self.arrived.clear()
                await self.arrived.wait()

    async def first_not_from(self, port: int, since: float, timeout: float) -> tuple[float, int]:
        """The first datagram after `since` from a sender other than `port`: (arrival, port)."""
        async with asyncio.timeout(timeout):
            while True:
                for at, sender, _ in self.datagrams:
                    if at >= since and sender != port:
                        return at, sender
                self.arrived.clear()
                await self.arrived.wait()


async def test_one_replica_sends_tally_and_the_other_takes_over_when_it_dies(
    own_nats_server: NatsServer, tmp_path: Path
) -> None:
    nats_url = own_nats_server.url
    tag = uuid.uuid4().hex[:6]
    station = f"tally-{tag}"
    loop = asyncio.get_running_loop()
    transport, device = await loop.create_datagram_endpoint(Device, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    bus = Bus(nats_url, "tally-duty-test")
    await bus.connect()
    replicas = {name: replica(nats_url, tmp_path, name) for name in (f"a-{tag}", f"b-{tag}")}
    try:
        async with running_ingest(nats_url) as ingest:
            await add_station(ingest, station, "广州台")
            change = ingest_pb2.SetStation(id=station, tally_url=f"tsl5+udp://127.0.0.1:{port}")
            await station_command(ingest, ingest_pb2.StationCommand(set=change))
            for proc in replicas.values():
                proc.start()
            for proc in replicas.values():
                await asyncio.to_thread(proc.wait_ready)
            started = time.monotonic()
            # Three refreshes (2 s apart) with both replicas up: one sender only.
            ports = await device.count_from(started, 4, timeout=20)
            assert len(set(ports)) == 1, ports
            assert all(p.displays[0].text == "广州台" for _, _, p in device.datagrams)

            leases = await bus.kv(f"{SERVICE}-leases", control_pb2.Lease)
            entry = await leases.get(UNIT)
            assert entry is not None and entry.value.owner in replicas
            on_duty = entry.value.owner
            killed_at = time.monotonic()
            replicas[on_duty].signal(signal.SIGKILL)
            replicas[on_duty].wait(5)
            # The next datagram from another sender: the duty taken over and sent at once.
            arrived, new_port = await device.first_not_from(ports[0], killed_at, HANDOVER_S + 5)
            handover = arrived - killed_at
            print(f"\ntally on duty again {handover:.2f} s after the kill")
            assert handover <= HANDOVER_S, handover
            # From then on, only the replica now on duty sends.
            since = time.monotonic()
            later = await device.count_from(since, 3, timeout=3 * REFRESH_S + 5)
            assert set(later) == {new_port}, later
            entry = await leases.get(UNIT)
            assert entry is not None and entry.value.owner != on_duty
    finally:
        for proc in replicas.values():
            proc.stop()
        transport.close()
        await bus.drain()
