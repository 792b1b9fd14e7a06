"""The station's event stream (docs/adr/0012): tally, cues and talkback, read from distribution.

    GET  <exchange>/exchange/<station>/events          Server-Sent Events of StationEvent JSON
    POST <exchange>/exchange/<station>/cues/<id>/ack   {"by": "station-client"}

`SseParser` reads the event-stream format (split chunks, CR/LF/CRLF line ends, comments,
multi-line data, `retry:`); `StationEventStream` follows the stream with the station's bearer
token and reconnects after 0.5 s, 1 s, 2 s ... up to 10 s (or the server's `retry:`), and
acknowledges cues; `StationFollower` keeps what the station was told and logs each change as one
line (`tally`, `talkback`, `cue`, `cue_acknowledged`, `cue_cleared`). Where the exchange is:
ingest's `/station/<id>/config.json` says (`exchange_url_from_whip`).

A wrong or revoked token (401) or another station's stream (403) is final: `StreamRefused`; so
is a 404 before the first connection when asked (`absent_is_final`: no exchange at that URL).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import IO
from urllib.parse import quote, urlsplit

import aiohttp
import structlog
from google.protobuf import json_format

from services.common.gen.baycast.v1 import exchange_pb2
from services.common.tls import http_connector

RETRY_MIN_S = 0.5
RETRY_MAX_S = 10.0
# The server sends a comment every 15 s; a stream silent for this long is taken to be dead.
IDLE_TIMEOUT_S = 45.0
HTTP_TIMEOUT_S = 10.0
CLIENT_NAME = "station-client"
FINAL_STATUSES = (401, 403)

log = structlog.get_logger("station.events")


@dataclass(frozen=True)
class SseEvent:
    type: str  # "message" unless the stream named it
    data: str
    last_event_id: str = ""


class SseParser:
    """The HTML standard's event-stream interpretation, fed text as it arrives."""

    def __init__(self) -> None:
        self.retry_ms: int | None = None
        self.last_event_id = ""
        self._buffer = ""
        self._skip_line_feed = False  # the last chunk ended in CR: a LF after it belongs to it
        self._started = False
        self._type = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[SseEvent]:
        """The events that `text` completes, in order."""
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_line_feed and text.startswith("\n"):
            text = text[1:]
        self._skip_line_feed = False
        buffer = self._buffer + text
        events: list[SseEvent] = []
        start = 0
        i = 0
        while i < len(buffer):
            char = buffer[i]
            if char == "\n" or char == "\r":
                event = self._line(buffer[start:i])
                if event is not None:
                    events.append(event)
                if char == "\r":
                    if i + 1 == len(buffer):
                        self._skip_line_feed = True
                    elif buffer[i + 1] == "\n":
                        i += 1
                start = i + 1
            i += 1
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        kind, self._type = self._type or "message", ""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return SseEvent(kind, data, self.last_event_id)


class StreamRefused(Exception):
    """The exchange refused the token for good (401) or for this station (403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


def sse_to_station_event(event: SseEvent) -> exchange_pb2.StationEvent | None:
    """The StationEvent an SSE event carries; None for what this client does not know."""
    message = exchange_pb2.StationEvent()
    try:
        json_format.Parse(event.data, message, ignore_unknown_fields=True)
    except json_format.ParseError:
        return None
    return message if message.WhichOneof("event") else None


def config_url(whip_url: str) -> str:
    """`<ingest base>/station/<id>/config.json` for a WHIP URL `<ingest base>/whip/<id>`."""
    parts = urlsplit(whip_url)
    prefix, sep, station = parts.path.rpartition("/whip/")
    if not sep or not station:
        raise ValueError(f"not a WHIP URL of a station: {whip_url!r}")
    return f"{parts.scheme}://{parts.netloc}{prefix}/station/{station}/config.json"


async def exchange_url_from_whip(http: aiohttp.ClientSession, whip_url: str) -> str:
    """Where the station reaches the exchange, as ingest's station config says.

    An empty `exchange_url` there means the same origin as ingest (one reverse proxy for both).
    """
    async with http.get(config_url(whip_url)) as resp:
        if resp.status != 200:
            raise StreamRefused(resp.status, (await resp.text()).strip())
        config = await resp.json()
    exchange = str(config.get("exchange_url") or "")
    if not exchange:
        parts = urlsplit(whip_url)
        exchange = f"{parts.scheme}://{parts.netloc}"
    return exchange.rstrip("/")


class StationEventStream:
    """One station's event stream, followed across reconnections."""

    def __init__(
        self,
        exchange_url: str,
        station: str,
        token: str,
        *,
        retry_min_s: float = RETRY_MIN_S,
        retry_max_s: float = RETRY_MAX_S,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        absent_is_final: bool = False,
        ca_file: str = "",
    ) -> None:
        self.base = f"{exchange_url.rstrip('/')}/exchange/{quote(station, safe='')}"
        self.ca_file = ca_file  # trusted on top of the system's roots (a private CA)
        self.station = station
        self.token = token
        self.retry_min_s = retry_min_s
        self.retry_max_s = retry_max_s
        self.idle_timeout_s = idle_timeout_s
        self.absent_is_final = absent_is_final
        self.connections = 0  # how many times the stream opened
        self.connected = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def __aenter__(self) -> StationEventStream:
        self._http = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
            connector=http_connector(self.ca_file),
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("use `async with StationEventStream(...)`")
        return self._http

    async def events(
        self, stop: asyncio.Event | None = None
    ) -> AsyncIterator[exchange_pb2.StationEvent]:
        """Every event, reconnecting after failures until `stop` is set. Each connection starts
        with `hello` and the station's whole state again."""
        stop = stop or asyncio.Event()
        delay = self.retry_min_s
        while not stop.is_set():
            server_retry_s = 0.0
            try:
                async for event, retry_ms in self._connection(stop):
                    delay = self.retry_min_s
                    server_retry_s = retry_ms / 1000
                    yield event
                if not stop.is_set():
                    log.warning("event_stream_ended", station=self.station)
            except StreamRefused:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning(
                    "event_stream_failed",
                    station=self.station,
                    error=str(exc) or type(exc).__name__,
                )
            self.connected.clear()
            if stop.is_set():
                break
            wait_s = max(delay, server_retry_s)
            log.info("event_stream_reconnecting", station=self.station, in_s=round(wait_s, 2))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
            delay = min(delay * 2, self.retry_max_s)

    async def _connection(
        self, stop: asyncio.Event
    ) -> AsyncIterator[tuple[exchange_pb2.StationEvent, int]]:
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=HTTP_TIMEOUT_S, sock_read=self.idle_timeout_s
        )
        headers = {**self._auth, "Accept": "text/event-stream", "Cache-Control": "no-cache"}
        async with self.http.get(f"{self.base}/events", headers=headers, timeout=timeout) as resp:
            final = resp.status in FINAL_STATUSES or (
                resp.status == 404 and self.absent_is_final and not self.connections
            )
            if final:
                raise StreamRefused(resp.status, (await resp.text()).strip())
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=(await resp.text()).strip()
                )
            self.connections += 1
            self.connected.set()
            log.info("event_stream_open", station=self.station)
            parser = SseParser()
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            stopped = asyncio.create_task(stop.wait())
            try:
                while True:
                    read = asyncio.ensure_future(resp.content.readany())
                    await asyncio.wait([read, stopped], return_when=asyncio.FIRST_COMPLETED)
                    if not read.done():
                        read.cancel()
                        return
                    chunk = read.result()
                    if not chunk:
                        return
                    for sse in parser.feed(decoder.decode(chunk)):
                        event = sse_to_station_event(sse)
                        if event is not None:
                            yield event, parser.retry_ms or 0
            finally:
                stopped.cancel()

    async def acknowledge(self, cue_id: str, by: str = CLIENT_NAME) -> exchange_pb2.Cue:
        """Acknowledge the station's cue `cue_id`; the cue as the exchange now has it."""
        async with self.http.post(
            f"{self.base}/cues/{quote(cue_id, safe='')}/ack",
            data=json.dumps({"by": by}),
            headers={**self._auth, "Content-Type": "application/json"},
        ) as resp:
            body = await resp.text()
            if resp.status != 200:
                raise aiohttp.ClientResponseError(
                    resp.request_info, (), status=resp.status, message=body.strip()
                )
        cue = exchange_pb2.Cue()
        json_format.Parse(body, cue, ignore_unknown_fields=True)
        return cue


def _seconds_until(us: int) -> float:
    return round(us / 1e6 - time.time(), 1)


class StationFollower:
    """What the station has been told (tally, talkback, open cues), logged as it changes."""

    def __init__(self, stream: StationEventStream, by: str = CLIENT_NAME) -> None:
        self.stream = stream
        self.by = by
        self.tally: dict[str, tuple[bool, bool]] = {}  # production -> (program, preview)
        self.talking: dict[str, bool] = {}
        self.cues: dict[str, exchange_pb2.Cue] = {}

    @property
    def on_air(self) -> bool:
        return any(program for program, _ in self.tally.values())

    def apply(self, event: exchange_pb2.StationEvent) -> None:
        kind = event.WhichOneof("event")
        if kind == "hello":
            feeds = {feed.production for feed in event.hello.feeds}
            for production in [p for p in self.tally if p not in feeds]:
                del self.tally[production]
            for production in [p for p in self.talking if p not in feeds]:
                del self.talking[production]
        elif kind == "tally":
            tally = event.tally
            now = (tally.program, tally.preview)
            if self.tally.get(tally.production) != now:
                self.tally[tally.production] = now
                log.info(
                    "tally",
                    program=tally.program,
                    preview=tally.preview,
                    production=tally.production,
                )
        elif kind == "talkback":
            talk = event.talkback
            if self.talking.get(talk.production, False) != talk.active:
                self.talking[talk.production] = talk.active
                log.info(
                    "talkback",
                    active=talk.active,
                    operator=talk.operator,
                    production=talk.production,
                )
        elif kind == "cue":
            self._cue(event.cue)

    def _cue(self, cue: exchange_pb2.Cue) -> None:
        known = self.cues.get(cue.id)
        if cue.cleared:
            if self.cues.pop(cue.id, None) is not None:
                log.info("cue_cleared", cue=cue.id, text=cue.text)
            return
        self.cues[cue.id] = cue
        if known is None:
            countdown = (
                {"countdown_s": _seconds_until(cue.countdown_to_us)} if cue.countdown_to_us else {}
            )
            log.info(
                "cue",
                cue=cue.id,
                text=cue.text,
                **countdown,
                acknowledged=bool(cue.acknowledged_at_us),
                production=cue.production,
                hint="" if cue.acknowledged_at_us else "press Enter to acknowledge",
            )
        elif cue.acknowledged_at_us and not known.acknowledged_at_us:
            log.info("cue_acknowledged", cue=cue.id, by=cue.acknowledged_by)

    def newest_open_cue(self) -> exchange_pb2.Cue | None:
        open_cues = [c for c in self.cues.values() if not c.acknowledged_at_us]
        return max(open_cues, key=lambda c: c.sent_at_us, default=None)

    async def acknowledge_newest(self) -> exchange_pb2.Cue | None:
        """Acknowledge the newest cue not acknowledged yet (what Enter does)."""
        cue = self.newest_open_cue()
        if cue is None:
            log.info("no_cue_to_acknowledge")
            return None
        try:
            acknowledged = await self.stream.acknowledge(cue.id, self.by)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("cue_ack_failed", cue=cue.id, error=str(exc) or type(exc).__name__)
            return None
        self._cue(acknowledged)
        return acknowledged

    async def run(
        self,
        stop: asyncio.Event,
        on_event: Callable[[exchange_pb2.StationEvent], None] | None = None,
    ) -> None:
        """Follow the stream until `stop`; StreamRefused when the token is refused."""
        async for event in self.stream.events(stop):
            self.apply(event)
            if on_event is not None:
                on_event(event)


class EnterKey:
    """Calls `on_enter` for each line typed on `stdin` (Enter), without a thread.

    Nothing happens when stdin cannot be watched (a regular file, or closed)."""

    def __init__(self, stdin: IO[str], on_enter: Callable[[], None]) -> None:
        self.on_enter = on_enter
        self.fd: int | None = None
        try:
            fd = stdin.fileno()
            asyncio.get_running_loop().add_reader(fd, self._readable)
        except (OSError, ValueError, PermissionError, NotImplementedError):
            return
        self.fd = fd

    def _readable(self) -> None:
        assert self.fd is not None
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        for _ in range(data.count(b"\n")):
            self.on_enter()

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fd)
            self.fd = None
