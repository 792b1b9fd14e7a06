"""Tally to the stations' hardware: TSL UMD v5 over UDP and TCP, from a real cut.

Two stations publish to a real ingest, a real mixer runs a production of them, and the test holds
a UDP socket and a TCP server as the stations' tally devices (set with `StationCommand.set`). A cut
lights the new program source red and puts the old one out; the UDP packet that says so arrives
within 100 ms of the cut's reply. Closing the TCP device and opening it again: the sender
reconnects and sends the current state.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common.gen.baycast.v1 import ingest_pb2
from services.distribution import tsl_umd
from services.distribution.tsl_umd import FrameReader, Packet, Tally
from services.ingest.service import IngestService
from tests.integration.distribution.exchange_show import exchange_show, tally_of, wait_until
from tests.support.nats import NatsServer
from tests.support.station import station_command

pytestmark = pytest.mark.timeout(90)

UDP_INDEX, TCP_INDEX, TCP_SCREEN = 3, 5, 2
MAX_TALLY_LATENCY_S = 0.100


@dataclass
class Received:
    """Packets a test tally device got, each with the loop time it arrived."""

    packets: list[tuple[float, Packet]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, data: bytes) -> None:
        self.packets.append((asyncio.get_running_loop().time(), tsl_umd.parse(data)))
        self.changed.set()

    async def first(
        self, accept: Callable[[Packet], bool], *, after: float = 0.0, timeout: float = 10.0
    ) -> tuple[float, Packet]:
        """The first packet that arrived after `after` and that `accept`s (waits for it)."""
        async with asyncio.timeout(timeout):
            while True:
                for at, packet in self.packets:
                    if at >= after and accept(packet):
                        return at, packet
                self.changed.clear()
                await self.changed.wait()


class UdpDevice(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received = Received()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.add(data)


class TcpDevice:
    """A TSL TCP receiver that can be switched off and on again on the same port."""

    def __init__(self) -> None:
        self.received = Received()
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        frames = FrameReader()
        with contextlib.suppress(OSError):
            while data := await reader.read(4096):
                for packet in frames.feed(data):
                    self.received.add(packet)


def shows(index: int, text: str, *, program: bool, preview: bool) -> Callable[[Packet], bool]:
    want = tsl_umd.station_display(index, text, program=program, preview=preview)
    return lambda p: want in p.displays


async def set_tally_url(ingest: IngestService, station: str, url: str) -> None:
    change = ingest_pb2.SetStation(id=station, tally_url=url)
    await station_command(ingest, ingest_pb2.StationCommand(set=change))


def tcp_connected(station: str) -> float | None:
    return REGISTRY.get_sample_value(
        "baycast_distribution_tally_tcp_connected", {"station": station}
    )


async def test_a_cut_reaches_the_stations_tally_lights_within_100_ms(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    loop = asyncio.get_running_loop()
    transport, udp = await loop.create_datagram_endpoint(UdpDevice, local_addr=("127.0.0.1", 0))
    udp_port = transport.get_extra_info("sockname")[1]
    tcp = TcpDevice()
    await tcp.start()
    tally = {
        "a": f"tsl5+udp://127.0.0.1:{udp_port}?index={UDP_INDEX}",
        "b": f"tsl5+tcp://127.0.0.1:{tcp.port}?index={TCP_INDEX}&screen={TCP_SCREEN}",
    }
    try:
        async with exchange_show(nats_server.url, tmp_path, tally) as show:
            a, b = show.a, show.b
            # At start distribution asks the mixer: a is on program, b on preview.
            await udp.received.first(shows(UDP_INDEX, "广州台", program=True, preview=False))
            _, first_tcp = await tcp.received.first(
                shows(TCP_INDEX, "深圳台", program=False, preview=True)
            )
            assert first_tcp.screen == TCP_SCREEN

            latencies = []
            for new, old in ((b, a), (a, b)):
                sent = loop.time()
                state = await show.cut(new)
                replied = loop.time()
                assert tally_of(state, new)[0] and not tally_of(state, old)[0]
                a_program, a_preview = tally_of(state, a)
                b_program, b_preview = tally_of(state, b)
                arrived, packet = await udp.received.first(
                    shows(UDP_INDEX, "广州台", program=a_program, preview=a_preview), after=sent
                )
                (display,) = packet.displays
                # The new program source is red on the left and on the text; the old one is out.
                if new == a:
                    assert (display.left, display.text_tally) == (Tally.RED, Tally.RED)
                else:
                    assert display.left == Tally.OFF and display.text_tally != Tally.RED
                latencies.append(arrived - replied)
                _, over_tcp = await tcp.received.first(
                    shows(TCP_INDEX, "深圳台", program=b_program, preview=b_preview), after=sent
                )
                assert over_tcp.displays[0].left == (Tally.RED if new == b else Tally.OFF)
            assert max(latencies) <= MAX_TALLY_LATENCY_S, latencies

            # UDP is sent again every 2 s, so a device switched on later catches up.
            last = udp.received.packets[-1][0]
            refreshed, _ = await udp.received.first(
                shows(UDP_INDEX, "广州台", program=a_program, preview=a_preview),
                after=last + 0.5,
            )
            assert refreshed - last <= 3.0

            # The TCP device goes away and comes back on its port: the sender reconnects (with
            # backoff) and sends what the lamps must show now.
            assert tcp_connected(b) == 1.0
            connections = tcp.connections
            await tcp.stop()
            await wait_until(lambda: tcp_connected(b) == 0.0, "the sender sees the device gone")
            gone = loop.time()
            await tcp.start()
            back, packet = await tcp.received.first(
                shows(TCP_INDEX, "深圳台", program=b_program, preview=b_preview),
                after=gone,
                timeout=15,
            )
            assert tcp.connections == connections + 1
            assert back - gone <= 5.0
            await wait_until(lambda: tcp_connected(b) == 1.0, "the sender reconnected")
            packets_sent = REGISTRY.get_sample_value(
                "baycast_distribution_tally_packets_total", {"transport": "udp"}
            )
            assert packets_sent is not None and packets_sent >= 4

            # A new tally address, set while the show runs, gets the current state at once; an
            # empty one stops the sender.
            moved, udp2 = await loop.create_datagram_endpoint(
                UdpDevice, local_addr=("127.0.0.1", 0)
            )
            try:
                port2 = moved.get_extra_info("sockname")[1]
                await set_tally_url(show.ingest, a, f"tsl5+udp://127.0.0.1:{port2}")
                await udp2.received.first(shows(1, "广州台", program=a_program, preview=a_preview))
                await set_tally_url(show.ingest, a, "")
                senders = show.dist.exchange.tally_out.senders
                await wait_until(lambda: a not in senders, "the sender of a stopped")
                assert b in senders
            finally:
                moved.close()
    finally:
        transport.close()
        with contextlib.suppress(Exception):
            await tcp.stop()
