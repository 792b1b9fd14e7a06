"""SRT contribution: a listener per station, with a passphrase only that station can learn.

PyAV's FFmpeg has no SRT, so Debian's `ffmpeg` (libsrt) terminates it (docs/adr/0006): per
station, one `ffmpeg` listens on that station's UDP port with the station's passphrase
(AES-128, encryption enforced: a caller with a wrong or no passphrase is rejected in the SRT
handshake and never reaches ingest), and copies what arrives as MPEG-TS to its stdout. Ingest
demuxes and decodes that pipe with PyAV in a worker thread. The listener process is started anew
after each session (ffmpeg's listener takes one caller).

    port        srt_addr's port + the station's slot (stations in creation order; a station is
                never deleted, only revoked, so slots are stable), for the first `srt_ports`
    passphrase  HMAC-SHA256(srt_secret, "srt:<station>:<token salt>"), 32 characters: it changes
                when the token is rotated and is gone when the station is revoked; the bucket
                alone does not give it away
    learn it    GET /srt/<station> with `Authorization: Bearer <token>` answers the caller URL

The passphrase is handed to ffmpeg as an option, never in the URL, so ffmpeg's messages do not
carry it; it is never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import av
import structlog
from aiohttp import web

from services.common import errors
from services.common.credentials import srt_passphrase
from services.common.gen.baycast.v1 import ingest_pb2
from services.common.web import CORS_HEADERS, bearer_token
from services.ingest.source import FrameSink, Source, TransportStats
from services.ingest.sources import SourceRegistry
from services.ingest.stations import StationRegistry

FFMPEG = "/usr/bin/ffmpeg"
LATENCY_US = 120_000  # SRT receive latency: retransmissions on a good link fit in it
REFRESH_S = 2.0  # how often the station list is re-read for new, rotated or revoked stations
RESTART_BACKOFF_S = 1.0
READ_SIZE = 64 * 1024
TS_PACKET = 188
STDERR_LINES = 5

log = structlog.get_logger("ingest.srt")


def listener_args(host: str, port: int, passphrase: str, ffmpeg: str = FFMPEG) -> list[str]:
    return [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-mode",
        "listener",
        "-passphrase",
        passphrase,
        "-pbkeylen",
        "16",
        "-enforced_encryption",
        "1",
        "-latency",
        str(LATENCY_US),
        "-probesize",
        "500000",
        "-analyzeduration",
        "1000000",
        "-i",
        f"srt://{host}:{port}",
        "-map",
        "0:v:0?",
        "-map",
        "0:a:0?",
        "-c",
        "copy",
        "-f",
        "mpegts",
        "-flush_packets",
        "1",
        "pipe:1",
    ]


class _PipeReader(io.RawIOBase):
    """ffmpeg's stdout for PyAV: the bytes already read first, then whatever is available."""

    def __init__(self, first: bytes, pipe: IO[bytes]) -> None:
        self._first = first
        self._pipe = pipe
        self.bytes_read = len(first)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._first:
            out, self._first = self._first, b""
            return out
        data = self._pipe.read1(size if size > 0 else READ_SIZE)  # type: ignore[attr-defined]
        self.bytes_read += len(data)
        return bytes(data)


class SrtSource(Source):
    """One SRT session: ffmpeg's MPEG-TS copy of it, demuxed and decoded in a worker thread."""

    protocol = "srt"

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        first: bytes,
        station: ingest_pb2.Station,
    ) -> None:
        super().__init__(station.id, station.id, station.name)
        assert proc.stdout is not None
        self.proc = proc
        self.reader = _PipeReader(first, proc.stdout)
        self._packets = 0
        self._decode_errors = 0
        self._stop = threading.Event()

    async def run(self, sink: FrameSink) -> str:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.to_thread(self._demux, loop, sink)
        finally:
            await self.close()

    def _demux(self, loop: asyncio.AbstractEventLoop, sink: FrameSink) -> str:
        try:
            container = av.open(self.reader, format="mpegts", mode="r")
        except av.FFmpegError as exc:
            return f"unreadable stream: {exc}"
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
                    self._packets += 1
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
        return TransportStats(
            bytes_received=self.reader.bytes_read,
            packets_received=self._packets,
            decode_errors=self._decode_errors,
        )

    async def close(self) -> None:
        self._stop.set()
        await asyncio.to_thread(stop_process, self.proc)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 3.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(eq=False)
class _Listener:
    station: ingest_pb2.Station
    port: int
    passphrase: str
    task: asyncio.Task[None] | None = None
    waiting: subprocess.Popen[bytes] | None = None  # the ffmpeg waiting for a caller
    stderr: deque[str] = field(default_factory=lambda: deque(maxlen=STDERR_LINES))


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
        ffmpeg: str = FFMPEG,
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
        self.ffmpeg = ffmpeg
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
                # A rotated token: the waiting ffmpeg restarts with the new passphrase (a live
                # session carries on until it ends).
                listener.station, listener.passphrase = station, passphrase
                if listener.waiting is not None:
                    await asyncio.to_thread(stop_process, listener.waiting)

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
        # Spawned on the loop (a fork takes a millisecond): from a thread, a cancellation here
        # would lose the handle of a process that then holds the station's port.
        proc = subprocess.Popen(  # noqa: ASYNC220
            listener_args(self.host, listener.port, listener.passphrase, self.ffmpeg),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        threading.Thread(
            target=_keep_tail, args=(proc.stderr, listener.stderr), daemon=True
        ).start()
        listener.waiting = proc
        handed_over = False
        try:
            # ffmpeg writes nothing until a caller got through the SRT handshake.
            first = await asyncio.to_thread(proc.stdout.read1, READ_SIZE)  # type: ignore[attr-defined]
            listener.waiting = None
            if not first:
                # Killed by a rotation or shutdown (negative code), or ffmpeg failed (bind...).
                if await asyncio.to_thread(proc.wait) > 0:
                    last = listener.stderr[-1] if listener.stderr else ""
                    log.warning(
                        "srt_listener_exited",
                        station=listener.station.id,
                        port=listener.port,
                        error=last,
                    )
                return
            station = listener.station
            refusal = self._refusal(station.id)
            if refusal:
                log.info("srt_session_refused", station=station.id, reason=refusal)
                return
            # No await between the checks and `start`: nobody can take the station meanwhile.
            live = self.sources.start(SrtSource(proc, bytes(first), station))
            handed_over = True
            log.info("srt_session_started", station=station.id, port=listener.port)
            assert live.task is not None
            await asyncio.shield(live.task)
        finally:
            listener.waiting = None
            if not handed_over:
                await asyncio.to_thread(stop_process, proc)

    def _refusal(self, station_id: str) -> str:
        if not self.accepting:
            return "ingest is shutting down"
        if self.is_busy(station_id):
            return f"station {station_id} is already live"
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


def _keep_tail(pipe: IO[bytes], tail: deque[str]) -> None:
    """Drain ffmpeg's stderr (so it never blocks on a full pipe), keeping the last lines."""
    with contextlib.suppress(ValueError, OSError):
        for raw in pipe:
            line = raw.decode(errors="replace").strip()
            if line:
                tail.append(line)
