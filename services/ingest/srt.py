"""SRT contribution: a listener per station, with a passphrase only that station can learn.

PyAV's FFmpeg has no SRT; ingest terminates it with libsrt itself, through ctypes (`libsrt.py`,
docs/adr/0006): per station, one SRT socket listens on that station's UDP port with the
station's passphrase (AES-128, encryption enforced: a caller with a wrong or no passphrase is
rejected in the SRT handshake and never reaches ingest). The caller's MPEG-TS is demuxed and
decoded with PyAV in a worker thread. The listening socket is closed once a caller is in (one
caller per station) and opened again when the session ends. A caller of a station already live,
on this ingest instance or another (live_claims.py), is hung up on.

    port        srt_addr's port + the station's slot (stations in creation order; a station is
                never deleted, only revoked, so slots are stable), for the first `srt_ports`
    passphrase  HMAC-SHA256(srt_secret, "srt:<station>:<token salt>"), 32 characters: it changes
                when the token is rotated and is gone when the station is revoked; the bucket
                alone does not give it away. It never leaves the process: no command line, no
                URL, no log line
    learn it    GET /srt/<station> with `Authorization: Bearer <token>` answers the caller URL
    statistics  libsrt's own, each second: packets received and lost (`pktRecvTotal`,
                `pktRcvLossTotal`: losses SRT detected, most of them then retransmitted in
                time), dropped for good (`pktRcvDropTotal`: too late to play), retransmissions
                received (`pktRcvRetrans`), the smoothed RTT (`msRTT`); the jitter is the RFC 3550
                interarrival jitter of the video's decoding timestamps against the time each
                picture's packets came out of libsrt (after its latency buffer, which absorbs
                the network's own jitter up to `LATENCY_MS`: what is left is the station's
                pacing and what the buffer could not hide); the bitrate is of the bytes received
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import structlog
from aiohttp import web

from services.common import errors
from services.common.credentials import srt_passphrase
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.web import CORS_HEADERS, bearer_token
from services.ingest.jitter import InterarrivalJitter
from services.ingest.libsrt import SrtError, SrtSocket
from services.ingest.live_claims import Claim
from services.ingest.source import FrameSink, Source, TransportStats
from services.ingest.sources import SourceRegistry
from services.ingest.stations import StationRegistry

LATENCY_MS = 120  # SRT receive latency: retransmissions on a good link fit in it
LATENCY_US = LATENCY_MS * 1000
REFRESH_S = 2.0  # how often the station list is re-read for new, rotated or revoked stations
RESTART_BACKOFF_S = 1.0
RECV_TIMEOUT_MS = 500  # a blocked read wakes this often to see whether the session was ended
PROBE_BYTES = 500_000
ANALYZE_US = 1_000_000

log = structlog.get_logger("ingest.srt")


class _SrtReader(io.RawIOBase):
    """The caller's bytes for PyAV: one SRT message per read, EOF when the session ends."""

    def __init__(self, conn: SrtSocket, stop: threading.Event) -> None:
        self._conn = conn
        self._stop = stop
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._stop.is_set():
            data = self._conn.recv()
            if data is None:
                return 0  # the caller left, broke off, or was ended
            if data:
                size = min(len(data), len(buffer))
                buffer[:size] = data[:size]
                self.bytes_read += size
                return size
        return 0


class SrtSource(Source):
    """One SRT session: the caller's MPEG-TS, demuxed and decoded in a worker thread."""

    protocol = "srt"

    def __init__(self, conn: SrtSocket, station: ingest_pb2.Station) -> None:
        super().__init__(station.id, station.id, station.name)
        self.conn = conn
        self._stop = threading.Event()
        self.reader = _SrtReader(conn, self._stop)
        self.jitter = InterarrivalJitter()
        self._decode_errors = 0

    async def run(self, sink: FrameSink) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(self._demux, loop, sink)
        finally:
            await self.close()

    def _demux(self, loop: asyncio.AbstractEventLoop, sink: FrameSink) -> str:
        try:
            container = av.open(
                self.reader,
                format="mpegts",
                mode="r",
                options={"probesize": str(PROBE_BYTES), "analyzeduration": str(ANALYZE_US)},
            )
        except av.FFmpegError as exc:
            return "ended by ingest" if self._stop.is_set() else f"unreadable stream: {exc}"
        with container:
            streams = [s for s in container.streams if s.type in ("video", "audio")]
            for stream in streams:
                if stream.type == "video" and stream.codec_context:
                    self.video_codec = stream.codec_context.name.upper()
                elif stream.type == "audio" and stream.codec_context:
                    self.audio_codec = stream.codec_context.name.upper()
            try:
                for packet in container.demux(streams):
                    if self._stop.is_set():
                        return "ended by ingest"
                    if packet.size == 0:
                        continue
                    if packet.stream.type == "video" and packet.dts is not None:
                        self.jitter.update(float(packet.dts * packet.time_base), time.monotonic())
                    try:
                        frames = packet.decode()
                    except av.FFmpegError:
                        self._decode_errors += 1
                        continue
                    for frame in frames:
                        offer = (
                            sink.offer_video
                            if isinstance(frame, av.VideoFrame)
                            else sink.offer_audio
                        )
                        loop.call_soon_threadsafe(offer, frame)  # type: ignore[arg-type]
            except av.FFmpegError as exc:
                return f"stream error: {exc}"
        if self._stop.is_set():
            return "ended by ingest"
        return "publisher disconnected"

    async def transport_stats(self) -> TransportStats:
        stats = self.conn.stats()
        return TransportStats(
            bytes_received=self.reader.bytes_read,
            packets_received=stats.pktRecvTotal,
            packets_lost=stats.pktRcvLossTotal,
            packets_dropped=stats.pktRcvDropTotal,
            retransmits=stats.pktRcvRetrans,
            jitter_ms=self.jitter.jitter_ms,
            rtt_ms=stats.msRTT,
            decode_errors=self._decode_errors,
        )

    async def close(self) -> None:
        self._stop.set()
        self.conn.close()  # wakes a read in progress


@dataclass(eq=False)
class _Listener:
    station: ingest_pb2.Station
    port: int
    passphrase: str
    task: asyncio.Task[None] | None = None
    waiting: SrtSocket | None = None  # the socket listening for a caller
    generation: int = 0  # listening sockets opened so far (a rotation opens a new one)


class SrtListeners:
    """One SRT listener per station, kept in step with the `stations` bucket."""

    def __init__(
        self,
        stations: StationRegistry,
        sources: SourceRegistry,
        *,
        host: str,
        first_port: int,
        ports: int,
        secret: str,
        max_sessions: int,
        public_host: Callable[[], str],
        is_busy: Callable[[str], bool] | None = None,
    ) -> None:
        self.stations = stations
        self.sources = sources
        self.host = host
        self.first_port = first_port
        self.ports = ports
        # Without a configured secret, passphrases hold for this process's life only.
        self.secret = secret or secrets.token_urlsafe(32)
        self.max_sessions = max_sessions
        self.public_host = public_host
        self.is_busy = is_busy or (lambda station_id: station_id in sources.live)
        self.accepting = True
        self.listeners: dict[str, _Listener] = {}
        self._refresher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.ports:
            return  # SRT is off
        await self.refresh()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="srt-refresh")
        log.info("srt_listening", host=self.host, first_port=self.first_port, ports=self.ports)

    async def close(self) -> None:
        self.accepting = False
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        await asyncio.gather(*(self._drop(s) for s in list(self.listeners)))

    def port_of(self, station_id: str) -> int:
        listener = self.listeners.get(station_id)
        return listener.port if listener else 0

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await self.refresh()
            except errors.BaycastError as exc:
                log.warning("srt_refresh_failed", error=str(exc))

    async def refresh(self) -> None:
        """Start, restart or stop listeners so they match the stations and their tokens."""
        stations = sorted(
            (await self.stations.bucket.items()).values(), key=lambda s: (s.created_at_us, s.id)
        )
        wanted: dict[str, tuple[ingest_pb2.Station, int, str]] = {}
        for slot, station in enumerate(stations[: self.ports]):
            passphrase = srt_passphrase(self.secret, station)
            if passphrase:
                wanted[station.id] = (station, self.first_port + slot, passphrase)
        for station_id in list(self.listeners):
            if station_id not in wanted:
                await self._drop(station_id)
        for station_id, (station, port, passphrase) in wanted.items():
            listener = self.listeners.get(station_id)
            if listener is None:
                listener = self.listeners[station_id] = _Listener(station, port, passphrase)
                listener.task = asyncio.create_task(
                    self._serve(listener), name=f"srt-listener-{station_id}"
                )
            elif listener.passphrase != passphrase:
                # A rotated token: the waiting socket listens anew with the new passphrase (a
                # live session carries on until it ends).
                listener.station, listener.passphrase = station, passphrase
                if listener.waiting is not None:
                    listener.waiting.close()

    async def _drop(self, station_id: str) -> None:
        listener = self.listeners.pop(station_id, None)
        if listener is None or listener.task is None:
            return
        listener.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener.task

    async def _serve(self, listener: _Listener) -> None:
        station_id = listener.station.id
        while True:
            try:
                await self._one_session(listener)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("srt_listener_failed", station=station_id)
            await asyncio.sleep(RESTART_BACKOFF_S)

    async def _one_session(self, listener: _Listener) -> None:
        """Listen, wait for a caller with the passphrase, serve its session until it ends."""
        station_id = listener.station.id
        try:
            sock = SrtSocket.listen(
                self.host, listener.port, passphrase=listener.passphrase, latency_ms=LATENCY_MS
            )
        except SrtError as exc:
            log.warning("srt_listen_failed", station=station_id, port=listener.port, error=str(exc))
            return
        listener.waiting = sock
        listener.generation += 1
        # The handshake (passphrase included) happens inside libsrt; accept returns a caller
        # that passed it, or None once the socket is closed (rotation, revocation, shutdown).
        accepting = asyncio.ensure_future(asyncio.to_thread(sock.accept, RECV_TIMEOUT_MS))
        try:
            conn = await asyncio.shield(accepting)
        except asyncio.CancelledError:
            sock.close()  # accept returns at once, with None or a caller that just got in
            with contextlib.suppress(Exception):
                caught = await accepting
                if caught is not None:
                    caught.close()
            raise
        except SrtError as exc:
            log.warning("srt_accept_failed", station=station_id, error=str(exc))
            return
        finally:
            listener.waiting = None
            sock.close()  # one caller per station: the port stops answering while it is in
        if conn is None:
            return
        station = listener.station
        refusal = self._refusal(station.id)
        if not refusal:
            try:
                claim = await self.sources.claim(station.id)
            except BaseException:
                conn.close()
                raise
            if claim is not Claim.TAKEN:
                refusal = f"station {station.id} is {claim.value}"
        if refusal:
            log.info("srt_session_refused", station=station.id, reason=refusal)
            conn.close()
            return
        # No await between the claim and `start`: the claim is released when the source ends.
        live = self.sources.start(SrtSource(conn, station))
        log.info("srt_session_started", station=station.id, port=listener.port)
        assert live.task is not None
        await asyncio.shield(live.task)

    def _refusal(self, station_id: str) -> str:
        if not self.accepting:
            return "ingest is shutting down"
        if self.is_busy(station_id):
            return f"station {station_id} is {Claim.LIVE_HERE.value}"
        if len(self.sources.live) >= self.max_sessions:
            return f"this ingest serves at most {self.max_sessions} sessions"
        return ""

    # -- where a station learns its SRT address ------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/srt/{station}", self.caller_url)

    async def caller_url(self, request: web.Request) -> web.Response:
        """GET /srt/<station> with the station's bearer token: its SRT caller URL, as JSON."""
        station_id = request.match_info["station"]
        try:
            station = await self.stations.authenticate(station_id, bearer_token(request))
        except errors.BaycastError as exc:
            return web.Response(
                status=exc.http_status, text=f"{exc.code}: {exc.message}\n", headers=CORS_HEADERS
            )
        port = self.port_of(station.id)
        if not port:
            why = "SRT is off on this ingest" if not self.ports else "no SRT port for this station"
            return web.Response(status=503, text=f"UNAVAILABLE: {why}\n", headers=CORS_HEADERS)
        passphrase = srt_passphrase(self.secret, station)
        host = self.public_host()
        body: dict[str, Any] = {
            "station": station.id,
            "host": host,
            "port": port,
            "passphrase": passphrase,
            "pbkeylen": 16,
            "latency_ms": LATENCY_US // 1000,
            "url": f"srt://{host}:{port}?mode=caller&passphrase={passphrase}&pbkeylen=16"
            f"&latency={LATENCY_US}",
        }
        return web.json_response(body, headers={**CORS_HEADERS, "Cache-Control": "no-store"})
