"""Tally to the stations' hardware: TSL UMD v5 to each station's `tally_url` (docs/adr/0012).

One sender per station that has a tally address (the `stations` bucket, followed as it changes):

* `tsl5+udp://host:port` sends a datagram on every change and again every 2 s, so a device that
  powers up (or a packet that got lost) catches up within 2 s;
* `tsl5+tcp://host:port` keeps a client connection, reconnecting with exponential backoff
  (0.5 s doubling to 10 s) and sending the current state on every (re)connect, then each change.
  A peer that stops reading is dropped once the small send buffer fills, and reconnected.

Only the distribution replica on tally duty sends (services/distribution/tally_duty.py): two
replicas would each hold a TCP connection to a device that takes one, and double every datagram.

Nothing here waits on a device: a datagram is handed to the kernel, a TCP write to the
transport's bounded buffer. A station that is a source of several productions is lit by all of
them together: left red when on program anywhere, right green when on preview anywhere, and the
text tally red if on program anywhere, else green if on preview anywhere, else off.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import structlog

from services.common import errors
from services.common.gen.baycast.v1 import ingest_pb2, mixer_pb2
from services.common.kv_mirror import KvMirror
from services.common.tally_url import TallyTarget, parse_tally_url
from services.distribution import metrics, tsl_umd
from services.distribution.switcher_watch import SwitcherWatch

REFRESH_S = 2.0
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0
CONNECT_TIMEOUT_S = 5.0
# A connection that lived this long was a good one: the next failure starts the backoff afresh.
STABLE_S = 5.0
# Tally packets are tens of bytes: this much unsent means the peer stopped reading.
MAX_TCP_BUFFER_BYTES = 16 * 1024
# UMDs show a few characters; a long name must not push a packet past 2048 bytes.
MAX_TEXT_CHARS = 64
KEEPALIVE_IDLE_S = 10
KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3

log = structlog.get_logger("tally_out")


@dataclass(frozen=True)
class Lights:
    """Where a station stands across every production it is a source of."""

    program: bool = False
    preview: bool = False


def merge(tallies: Iterable[mixer_pb2.Tally], station: str) -> Lights:
    """The station's lights: program if on program anywhere, preview if on preview anywhere."""
    program = preview = False
    for tally in tallies:
        for entry in tally.sources:
            if entry.source == station:
                program = program or entry.program
                preview = preview or entry.preview
    return Lights(program, preview)


def packet_for(target: TallyTarget, name: str, lights: Lights) -> bytes:
    display = tsl_umd.station_display(
        target.index, name[:MAX_TEXT_CHARS], program=lights.program, preview=lights.preview
    )
    return tsl_umd.build(tsl_umd.Packet(screen=target.screen, displays=(display,)))


class TallySender(ABC):
    """Keeps one station's tally device showing the station's lights."""

    transport: ClassVar[str]

    def __init__(self, station: str, target: TallyTarget, name: str, lights: Lights) -> None:
        self.station = station
        self.target = target
        self.name = name
        self.lights = lights
        self.packet = packet_for(target, name, lights)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"tally-{self.station}")

    def stop(self) -> asyncio.Task[None] | None:
        """Stop sending; returns the task to await (it releases its socket as it ends)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        return task

    def show(self, name: str, lights: Lights) -> None:
        """Send `lights` now if they (or the name) changed."""
        if name == self.name and lights == self.lights:
            return
        self.name, self.lights = name, lights
        self.packet = packet_for(self.target, name, lights)
        self.changed()

    @abstractmethod
    def changed(self) -> None:
        """The packet changed: get it to the device."""

    @abstractmethod
    async def _run(self) -> None:
        """Hold the transport and send until cancelled."""


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, station: str) -> None:
        self.station = station
        self.lost = asyncio.Event()

    def error_received(self, exc: Exception) -> None:
        # An ICMP "port unreachable" for an earlier datagram: the device is off or elsewhere.
        metrics.TALLY_SEND_ERRORS.labels("udp").inc()
        log.debug("tally_udp_error", station=self.station, error=str(exc) or type(exc).__name__)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.set()


class UdpSender(TallySender):
    transport = "udp"

    def __init__(self, station: str, target: TallyTarget, name: str, lights: Lights) -> None:
        super().__init__(station, target, name, lights)
        self._transport: asyncio.DatagramTransport | None = None

    def changed(self) -> None:
        if self._transport is not None:
            self._send()
        else:
            self._wake.set()

    def _send(self) -> None:
        if self._transport is None:
            return
        try:
            self._transport.sendto(self.packet)
        except OSError as exc:
            metrics.TALLY_SEND_ERRORS.labels("udp").inc()
            log.debug("tally_udp_send_failed", station=self.station, error=str(exc))
            return
        metrics.TALLY_PACKETS.labels("udp").inc()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        while True:
            try:
                transport, protocol = await self._open(loop)
            except OSError as exc:  # the host does not resolve, or no route
                metrics.TALLY_SEND_ERRORS.labels("udp").inc()
                log.warning("tally_udp_unreachable", station=self.station, error=str(exc))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            self._transport = transport
            try:
                while not protocol.lost.is_set():
                    self._wake.clear()
                    self._send()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), REFRESH_S)
            finally:
                self._transport = None
                transport.abort()

    async def _open(
        self, loop: asyncio.AbstractEventLoop
    ) -> tuple[asyncio.DatagramTransport, _Datagrams]:
        protocol = _Datagrams(self.station)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: protocol, remote_addr=(self.target.host, self.target.port)
        )
        return transport, protocol


class TcpSender(TallySender):
    transport = "tcp"

    def __init__(self, station: str, target: TallyTarget, name: str, lights: Lights) -> None:
        super().__init__(station, target, name, lights)
        self._peer_gone = False
        metrics.TALLY_TCP_CONNECTED.labels(station).set(0)

    def changed(self) -> None:
        self._wake.set()

    def stop(self) -> asyncio.Task[None] | None:
        with contextlib.suppress(KeyError):
            metrics.TALLY_TCP_CONNECTED.remove(self.station)
        return super().stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = BACKOFF_MIN_S
        quiet = False  # the device's absence has been told once already
        while True:
            connected_at: float | None = None
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(self.target.host, self.target.port),
                    CONNECT_TIMEOUT_S,
                )
                connected_at = loop.time()
                quiet = False
                await self._session(reader, writer)
            except (OSError, TimeoutError) as exc:
                metrics.TALLY_SEND_ERRORS.labels("tcp").inc()
                # Told once when the device goes (or is not there), quiet while it stays away.
                (log.debug if quiet else log.info)(
                    "tally_tcp_down",
                    station=self.station,
                    error=str(exc) or type(exc).__name__,
                    retry_in=backoff,
                )
                quiet = True
            finally:
                if self._task is not None:  # still wanted: not being stopped
                    metrics.TALLY_TCP_CONNECTED.labels(self.station).set(0)
            if connected_at is not None and loop.time() - connected_at >= STABLE_S:
                backoff = BACKOFF_MIN_S
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        _keepalive(writer)
        transport.set_write_buffer_limits(high=MAX_TCP_BUFFER_BYTES)
        metrics.TALLY_TCP_CONNECTED.labels(self.station).set(1)
        log.info("tally_tcp_connected", station=self.station)
        self._peer_gone = False
        watcher = asyncio.create_task(self._watch_peer(reader), name=f"tally-peer-{self.station}")
        sent: bytes | None = None
        try:
            while True:
                self._wake.clear()
                if self._peer_gone:
                    raise ConnectionResetError("the tally device closed the connection")
                if self.packet != sent:
                    if transport.get_write_buffer_size() > MAX_TCP_BUFFER_BYTES:
                        raise ConnectionResetError("the tally device stopped reading")
                    writer.write(tsl_umd.frame(self.packet))
                    sent = self.packet
                    metrics.TALLY_PACKETS.labels("tcp").inc()
                await self._wake.wait()
        finally:
            watcher.cancel()
            transport.abort()

    async def _watch_peer(self, reader: asyncio.StreamReader) -> None:
        """Read (and ignore) what the device sends, to learn when it goes away."""
        with contextlib.suppress(OSError):
            while await reader.read(4096):
                pass
        self._peer_gone = True
        self._wake.set()


def _keepalive(writer: asyncio.StreamWriter) -> None:
    """A device that vanished without closing is noticed in ~25 s even with nothing to send."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL_S)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


SENDERS: dict[str, type[TallySender]] = {"udp": UdpSender, "tcp": TcpSender}


def make_sender(station: str, target: TallyTarget, name: str, lights: Lights) -> TallySender:
    try:
        cls = SENDERS[target.transport]
    except KeyError:
        raise errors.InvalidArgument(
            f"no tally sender for transport {target.transport!r}", field="tally_url"
        ) from None
    return cls(station, target, name, lights)


class TallyOut:
    """A sender per station with a tally address, fed by every production's tally, while this
    replica is on duty (`send`) and none while it is not (`stop_sending`)."""

    def __init__(self, stations: KvMirror[ingest_pb2.Station], watch: SwitcherWatch) -> None:
        self.stations = stations
        self.watch = watch
        self.senders: dict[str, TallySender] = {}
        self.sending = False
        self._stopping: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Follow the stations and the tallies (senders start with `send`)."""
        self.stations.on_change(self._station_changed)
        self.watch.on_tally(self._tally_changed)

    def send(self) -> None:
        """On duty: a sender for each station with a tally address."""
        self.sending = True
        for key, station in self.stations.items().items():
            self._station_changed(key, station)

    async def stop_sending(self) -> None:
        """Off duty: every sender stopped, its socket closed."""
        self.sending = False
        await self.close()

    async def close(self) -> None:
        for station in list(self.senders):
            self._stop(station)
        tasks = list(self._stopping)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def lights(self, station: str) -> Lights:
        return merge(self.watch.tallies.values(), station)

    def _station_changed(self, key: str, station: ingest_pb2.Station | None) -> None:
        target: TallyTarget | None = None
        if station is not None and not station.revoked and station.tally_url:
            try:
                target = parse_tally_url(station.tally_url)
            except errors.InvalidArgument:
                log.warning("tally_url_unusable", station=key)
        current = self.senders.get(key)
        if current is not None and current.target != target:
            self._stop(key)
            current = None
        if target is None or station is None or not self.sending:
            return
        if current is None:
            current = make_sender(key, target, station.name, self.lights(key))
            self.senders[key] = current
            current.start()
            log.info("tally_sender_started", station=key, transport=target.transport)
        else:
            current.show(station.name, self.lights(key))

    def _tally_changed(
        self, _production: str, _before: mixer_pb2.Tally | None, _after: mixer_pb2.Tally | None
    ) -> None:
        for station, sender in self.senders.items():
            sender.show(sender.name, self.lights(station))

    def _stop(self, station: str) -> None:
        sender = self.senders.pop(station, None)
        if sender is None:
            return
        task = sender.stop()
        if task is not None:
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
