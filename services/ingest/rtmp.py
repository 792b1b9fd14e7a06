"""RTMP contribution: one listener for every station, the stream key is the station's token.

    rtmp://<host>:1935/live/<token>        the key alone names the station (OBS: server
                                           rtmp://<host>:1935/live, stream key <token>)
    rtmp://<host>:1935/<station>/<token>   the application names the station (one hash check)

A small asyncio server (see docs/adr/0006): handshake and chunk stream (`rtmp_chunks`), AMF0
commands (`rtmp_amf`): `connect`, `releaseStream`, `FCPublish`, `createStream`, `publish`. The
key is checked at `publish`: a wrong, revoked or unknown key gets `NetStream.Publish.BadName` and
the connection is closed, with no source created; a station already live (on this ingest
instance or another: live_claims.py), a full ingest or a draining one are refused the same way
with their reason. An accepted publish becomes an `RtmpSource` in the `SourceRegistry` (source
id = station id, protocol "rtmp"), which decodes the FLV tags (`rtmp_flv`) and feeds the hub
like a WHIP session. The key is never logged.

Until the key is accepted a client is a stranger, and what it may cost is bounded
(`rtmp_limits`): connections negotiating per address and in all, one deadline from the accept to
the accepted key, small command messages and no media, bounded AMF0 decoding, and stream-key
tries per address and in all (a try over the rate is answered as a wrong key, unlooked-up).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import nats.errors
import structlog

from services.common import errors
from services.common.credentials import token_matches
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.settings import split_addr
from services.ingest import metrics
from services.ingest.jitter import InterarrivalJitter
from services.ingest.live_claims import Claim
from services.ingest.rtmp_amf import AmfError, decode, encode
from services.ingest.rtmp_chunks import (
    ACKNOWLEDGEMENT,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    CSID_COMMAND,
    CSID_CONTROL,
    CSID_STREAM,
    HANDSHAKE_SIZE,
    SET_CHUNK_SIZE,
    SET_PEER_BANDWIDTH,
    STREAM_BEGIN,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkError,
    ChunkLimits,
    ChunkParser,
    ChunkWriter,
    Message,
    control,
    handshake_reply,
    user_control,
)
from services.ingest.rtmp_flv import FlvDecoder, UnsupportedMedia
from services.ingest.rtmp_limits import (
    AMF,
    DEADLINE,
    EVICTED,
    ConnectionGate,
    RefusalLog,
    RtmpLimits,
    address_key,
)
from services.ingest.source import FrameSink, Source, TransportStats
from services.ingest.sources import SourceRegistry
from services.ingest.stations import STATION_ID, StationRegistry
from services.ingest.tcp_info import tcp_info

LOOKUP_APP = "live"  # rtmp://host/live/<token>: find the station by its token
MEDIA_TIMEOUT_S = 10.0  # a publisher silent this long is gone
SERVER_WINDOW = 2_500_000
SERVER_CHUNK_SIZE = 4096
READ_SIZE = 64 * 1024
# Before the publish: commands of a few hundred bytes; small reads bound each wake-up's parsing.
NEGOTIATION_READ_SIZE = 4096
STREAM_ID = 1
ENDING_COMMANDS = ("deleteStream", "FCUnpublish", "closeStream")
WRONG_KEY = "unknown, wrong or revoked stream key"
# What a key check that cannot reach the stations bucket raises.
LOOKUP_FAILED = (errors.BaycastError, nats.errors.Error, TimeoutError)

log = structlog.get_logger("ingest.rtmp")


class Refused(Exception):
    """A publish this server will not take: `reason` is the metric label, the message is sent
    to the publisher."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def loggable_app(app: str) -> str:
    """The application as a log line may show it: `live` or a station id, nothing else (an
    encoder given the whole URL with its key as the server would put the key there)."""
    return app if app == LOOKUP_APP or STATION_ID.match(app) else "(other)"


class RtmpConnection:
    """One TCP connection: handshake, message reading with acknowledgements, replies."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: ChunkLimits | None = None,
        *,
        read_size: int = READ_SIZE,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = ChunkParser(limits)
        self.read_size = read_size
        self.out = ChunkWriter()
        self.ended_by = ""  # the reason when ingest cut the connection (`abort`)
        self.bytes_received = 0
        self.arrived_at = 0.0  # when the bytes that completed the last message came in
        self._window = 0
        self._acked = 0
        self._pending: deque[tuple[Message, float]] = deque()

    @property
    def socket(self) -> Any:
        """The connection's socket (for TCP_INFO), None once closed."""
        return self.writer.get_extra_info("socket")

    @property
    def peer_host(self) -> str:
        peer = self.writer.get_extra_info("peername")
        return str(peer[0]) if peer else ""

    def publishing(self, limits: ChunkLimits) -> None:
        """The publish is accepted: media may come, within `limits`, in large reads."""
        self.parser.limits = limits
        self.read_size = READ_SIZE

    async def handshake(self) -> None:
        c0c1 = await self.reader.readexactly(1 + HANDSHAKE_SIZE)
        self.writer.write(handshake_reply(c0c1))
        await self.writer.drain()
        await self.reader.readexactly(HANDSHAKE_SIZE)  # C2: an echo of S1, nothing to check

    async def next_message(self, timeout: float | None) -> Message | None:
        """The next whole message, None when the peer closed (TimeoutError when silent for
        `timeout`; None: no timeout of its own)."""
        while not self._pending:
            data = await asyncio.wait_for(self.reader.read(self.read_size), timeout)
            if not data:
                return None
            arrived = time.monotonic()
            self.bytes_received += len(data)
            self._pending.extend((m, arrived) for m in self.parser.feed(data))
            if self._window and self.bytes_received - self._acked >= self._window:
                self._acked = self.bytes_received
                self.send(CSID_CONTROL, control(ACKNOWLEDGEMENT, self.bytes_received & 0xFFFFFFFF))
        message, self.arrived_at = self._pending.popleft()
        if message.type_id == WINDOW_ACK_SIZE and len(message.payload) >= 4:
            (self._window,) = struct.unpack(">I", message.payload[:4])
        return message

    def send(self, csid: int, message: Message) -> None:
        if not self.writer.is_closing():
            self.writer.write(self.out.encode(csid, message))

    def command(self, stream_id: int, *values: Any) -> None:
        csid = CSID_STREAM if stream_id else CSID_COMMAND
        self.send(csid, Message(COMMAND_AMF0, stream_id, 0, encode(*values)))

    def status(self, stream_id: int, level: str, code: str, description: str) -> None:
        info = {"level": level, "code": code, "description": description}
        self.command(stream_id, "onStatus", 0, None, info)

    async def flush(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def close(self) -> None:
        self.writer.close()

    def abort(self, reason: str) -> None:
        """Cut the connection at once (no goodbye: the peer gets a reset)."""
        self.ended_by = reason
        self.writer.transport.abort()


def command_values(message: Message) -> list[Any] | None:
    """The AMF0 values of a command message, None for any other message."""
    if message.type_id == COMMAND_AMF0:
        return decode(message.payload)
    if message.type_id == COMMAND_AMF3 and message.payload[:1] == b"\x00":
        return decode(message.payload[1:])  # an AMF3 command whose values are AMF0
    return None


async def negotiate(conn: RtmpConnection) -> tuple[str, str, int]:
    """Answer the commands up to `publish`; returns (application, stream key, stream id).

    No time limit of its own: the caller's deadline covers the whole negotiation."""
    app = ""
    while True:
        message = await conn.next_message(None)
        if message is None:
            raise ConnectionError("closed before publishing")
        values = command_values(message)
        if not values or not isinstance(values[0], str):
            continue
        # Only a number is echoed back as the transaction id (anything else the client sent
        # could be made to fail the encoding of the answer).
        name = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0
        if name == "connect":
            props = values[2] if len(values) > 2 and isinstance(values[2], dict) else {}
            app = str(props.get("app", "")).strip("/")
            conn.send(CSID_CONTROL, control(WINDOW_ACK_SIZE, SERVER_WINDOW))
            conn.send(CSID_CONTROL, control(SET_PEER_BANDWIDTH, SERVER_WINDOW, b"\x02"))
            conn.send(CSID_CONTROL, control(SET_CHUNK_SIZE, SERVER_CHUNK_SIZE))
            conn.out.chunk_size = SERVER_CHUNK_SIZE
            conn.command(
                0,
                "_result",
                txid,
                {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                {
                    "level": "status",
                    "code": "NetConnection.Connect.Success",
                    "description": "Connection succeeded.",
                    "objectEncoding": 0,
                },
            )
        elif name in ("releaseStream", "FCPublish"):
            conn.command(0, "_result", txid, None)
        elif name == "createStream":
            conn.command(0, "_result", txid, None, STREAM_ID)
        elif name == "publish":
            key = values[3] if len(values) > 3 and isinstance(values[3], str) else ""
            return app, key, message.stream_id or STREAM_ID
        await conn.flush()


async def find_station(stations: StationRegistry, app: str, key: str) -> ingest_pb2.Station | None:
    """The station whose current token is `key` (under `live/`, or under its own id)."""
    key = key.partition("?")[0]  # some encoders append ?params to the key
    if not key:
        return None
    if app == LOOKUP_APP:
        for station in (await stations.bucket.items()).values():
            if token_matches(station, key):
                return station
        return None
    try:
        return await stations.authenticate(app, key)
    except errors.BaycastError:
        return None


class RtmpSource(Source):
    """One accepted RTMP publish: reads the connection's media messages and decodes them.

    Transport statistics: no loss (TCP retransmits what the network lost, which then shows as
    delay), the RTT and retransmissions from the socket's TCP_INFO (`tcp_info.py`), and the
    RFC 3550 interarrival jitter of the video messages' timestamps against their arrival.
    """

    protocol = "rtmp"

    def __init__(self, conn: RtmpConnection, station: ingest_pb2.Station) -> None:
        super().__init__(station.id, station.id, station.name)
        self.conn = conn
        self.decoder = FlvDecoder()
        self.jitter = InterarrivalJitter()
        self._media_messages = 0
        self._closed = False
        self._last_tcp: TransportStats = TransportStats()

    async def run(self, sink: FrameSink) -> str:
        loop = asyncio.get_running_loop()
        # One thread per publish keeps decoding in order and off the event loop.
        executor = ThreadPoolExecutor(1, thread_name_prefix=f"rtmp-{self.source_id}")
        try:
            while True:
                message = await self.conn.next_message(MEDIA_TIMEOUT_S)
                if message is None:
                    return "ended by ingest" if self._closed else "publisher disconnected"
                if message.type_id == VIDEO:
                    self._media_messages += 1
                    self.jitter.update(message.timestamp / 1000, self.conn.arrived_at)
                    frames = await loop.run_in_executor(
                        executor, self.decoder.video, message.timestamp, message.payload
                    )
                    self.video_codec = self.video_codec or "H264"
                    for frame in frames:
                        sink.offer_video(frame)
                elif message.type_id == AUDIO:
                    self._media_messages += 1
                    sound = await loop.run_in_executor(
                        executor, self.decoder.audio, message.timestamp, message.payload
                    )
                    self.audio_codec = self.audio_codec or "AAC"
                    for audio_frame in sound:
                        sink.offer_audio(audio_frame)
                else:
                    values = command_values(message)
                    if values and values[0] in ENDING_COMMANDS:
                        return "publisher ended the stream"
        except TimeoutError:
            return f"no media for {MEDIA_TIMEOUT_S:.0f} s"
        except UnsupportedMedia as exc:
            return str(exc)
        except (ChunkError, AmfError) as exc:
            return f"RTMP protocol error: {exc}"
        except ConnectionError:
            return "publisher disconnected"
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            self.conn.close()

    async def transport_stats(self) -> TransportStats:
        sock = self.conn.socket
        info = tcp_info(sock) if sock is not None else None
        if info is not None:  # else (closing) the last values hold
            self._last_tcp = TransportStats(rtt_ms=info.rtt_ms, retransmits=info.total_retrans)
        return TransportStats(
            bytes_received=self.conn.bytes_received,
            packets_received=self._media_messages,
            packets_lost=0,
            jitter_ms=self.jitter.jitter_ms,
            rtt_ms=self._last_tcp.rtt_ms,
            retransmits=self._last_tcp.retransmits,
            decode_errors=self.decoder.decode_errors,
        )

    async def close(self) -> None:
        self._closed = True
        self.conn.close()


class RtmpServer:
    """The RTMP listener; `accepting` goes False when ingest drains."""

    def __init__(
        self,
        stations: StationRegistry,
        sources: SourceRegistry,
        *,
        addr: str,
        max_sessions: int,
        is_busy: Callable[[str], bool] | None = None,
        limits: RtmpLimits | None = None,
    ) -> None:
        self.stations = stations
        self.sources = sources
        self.addr = addr
        self.max_sessions = max_sessions
        # Whether a station is live or being admitted by another protocol (WHIP's pending offers).
        self.is_busy = is_busy or (lambda station_id: station_id in sources.live)
        self.limits = limits or RtmpLimits()
        self.gate: ConnectionGate[RtmpConnection] = ConnectionGate(
            self.limits.max_connections, self.limits.max_connections_per_addr
        )
        self.key_tries = self.limits.key_tries()
        self.refusals = RefusalLog()
        self.accepting = True
        self._server: asyncio.Server | None = None
        self._negotiating: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port, 0 when not listening."""
        if self._server is None or not self._server.sockets:
            return 0
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        """Listen on `addr`. A port already taken is logged, not fatal: WHIP and SRT carry on."""
        host, port = split_addr(self.addr)
        try:
            self._server = await asyncio.start_server(self._accepted, host, port)
        except OSError as exc:
            log.error("rtmp_listen_failed", addr=self.addr, error=exc.strerror)
            return
        log.info("rtmp_listening", addr=f"{host}:{self.port}")

    async def close(self) -> None:
        """Stop taking connections; connections still negotiating are dropped."""
        self.accepting = False
        if self._server is not None:
            self._server.close()
        for task in list(self._negotiating):
            task.cancel()
        await asyncio.gather(*self._negotiating, return_exceptions=True)

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new connection: through the gate into a negotiation, or cut at once (a refused
        one costs no task: a flood of them is cheap)."""
        conn = RtmpConnection(
            reader, writer, self.limits.negotiating_chunks(), read_size=NEGOTIATION_READ_SIZE
        )
        address = address_key(conn.peer_host)
        refusal, displaced = self.gate.enter(address, conn)
        metrics.RTMP_NEGOTIATING.set(self.gate.total)
        if refusal:
            self.refusals.refused("rtmp_connection_refused", refusal, peer=address)
            conn.abort(refusal)
            return
        if displaced is not None:
            self.refusals.refused("rtmp_connection_refused", EVICTED, peer=displaced[0])
            displaced[1].abort(EVICTED)
        task = asyncio.get_running_loop().create_task(self._connection(conn, address))
        self._negotiating.add(task)
        task.add_done_callback(self._negotiating.discard)

    async def _connection(self, conn: RtmpConnection, address: str) -> None:
        handed_over = False
        deadline = asyncio.timeout(self.limits.negotiation_timeout_s)
        try:
            async with deadline:
                handed_over = await self._negotiate(conn, address)
        except TimeoutError:
            if not deadline.expired():
                raise
            self.refusals.refused(
                "rtmp_connection_refused",
                DEADLINE,
                peer=address,
                detail=f"no accepted publish within {self.limits.negotiation_timeout_s:g} s",
            )
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if not conn.ended_by:  # cut by ingest: counted when it was cut
                self.refusals.noted("rtmp_connection_dropped", type(exc).__name__, peer=address)
        except ChunkError as exc:
            self.refusals.refused(
                "rtmp_connection_refused", exc.reason, peer=address, detail=str(exc)
            )
        except AmfError as exc:
            self.refusals.refused("rtmp_connection_refused", AMF, peer=address, detail=str(exc))
        finally:
            self.gate.leave(address, conn)
            metrics.RTMP_NEGOTIATING.set(self.gate.total)
            if not handed_over:
                conn.close()
        if handed_over:
            await conn.flush()

    async def _negotiate(self, conn: RtmpConnection, address: str) -> bool:
        """Handshake, commands, key and admission; True once the publish became a source."""
        await conn.handshake()
        app, key, stream_id = await negotiate(conn)
        try:
            station = await self._find(address, app, key)
            await self._admit(station)
        except Refused as exc:
            conn.status(stream_id, "error", "NetStream.Publish.BadName", str(exc))
            await conn.flush()
            self.refusals.refused(
                "rtmp_publish_refused",
                exc.reason,
                peer=address,
                app=loggable_app(app),
                detail=str(exc),
            )
            return False
        conn.publishing(self.limits.publishing_chunks())
        # No await between the claim (in `_admit`) and `start`: the claim is released when the
        # source ends.
        self.sources.start(RtmpSource(conn, station))
        conn.send(CSID_CONTROL, user_control(STREAM_BEGIN, stream_id))
        conn.status(stream_id, "status", "NetStream.Publish.Start", "publishing")
        log.info("rtmp_publish_started", station=station.id, peer=address)
        return True

    async def _find(self, address: str, app: str, key: str) -> ingest_pb2.Station:
        """The station the key opens; a try over the rate is refused as a wrong key, unread."""
        over_rate = self.key_tries.take(address)
        if over_rate:
            raise Refused(over_rate, WRONG_KEY)
        try:
            station = await find_station(self.stations, app, key)
        except LOOKUP_FAILED as exc:
            log.warning("rtmp_key_check_failed", peer=address, error=type(exc).__name__)
            raise Refused("unavailable", "cannot check the stream key now: try again") from None
        if station is None:
            raise Refused("key", WRONG_KEY)
        return station

    async def _admit(self, station: ingest_pb2.Station) -> None:
        if not self.accepting:
            raise Refused("draining", "ingest is shutting down")
        if self.is_busy(station.id):
            raise Refused("busy", f"station {station.id} is {Claim.LIVE_HERE.value}")
        if len(self.sources.live) >= self.max_sessions:
            raise Refused("full", f"this ingest serves at most {self.max_sessions} sessions")
        claim = await self.sources.claim(station.id)
        if claim is not Claim.TAKEN:
            raise Refused("busy", f"station {station.id} is {claim.value}")
