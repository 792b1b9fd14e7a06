"""A station's exchange over HTTP: its feeds, its event stream, its cue acknowledgements.

    GET  /exchange/<station>                 StationExchange (JSON)
    GET  /exchange/<station>/events          text/event-stream of StationEvent
    POST /exchange/<station>/cues/<id>/ack   acknowledges a cue: 200 with the Cue

The bearer token is the station's own (an operator's token may also read any station's feeds and
stream, but only the station acknowledges its cues). A wrong or missing token is 401 whether or
not the station exists; a station's token for another station, 403; an unknown station asked by
an operator, 404. Answers carry CORS headers: the station's page is served by ingest, and a
browser reads the stream with fetch() because EventSource cannot send a bearer header.

The stream (Server-Sent Events) starts with `retry: 2000`, then `hello` (the StationExchange),
the station's `tally` in each production it is a source of, its open cues (`cue`) and its
`talkback` per production; then every change of those, and a `: keepalive` comment every 15 s.
Each event is `event: <kind>` and `data: <StationEvent as JSON>`. A stream's queue is bounded:
a reader that falls that far behind is disconnected, and reconnects to a fresh snapshot.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import web

from services.common import errors
from services.common.bus import encode
from services.common.credentials import CredentialBook, Principal
from services.common.gen.baycast.v1 import exchange_pb2, ingest_pb2, mixer_pb2, operators_pb2
from services.common.kv_mirror import KvMirror
from services.common.web import CORS_HEADERS, bearer_token, error_response
from services.distribution import metrics
from services.distribution.cues import CLIENT_NAME, DEFAULT_ACK_BY, CueDesk, now_us
from services.distribution.station_feeds import is_source, station_exchange
from services.distribution.switcher_watch import SwitcherWatch

KEEPALIVE_S = 15.0
RETRY_MS = 2000
QUEUE_EVENTS = 256
WRITE_TIMEOUT_S = 10.0
MAX_ACK_BODY_BYTES = 1024
EVENT_STREAM = "text/event-stream; charset=utf-8"

log = structlog.get_logger("station_events")

Event = tuple[str, exchange_pb2.StationEvent]


def sse(event: exchange_pb2.StationEvent) -> bytes:
    """One Server-Sent Event: `event: <kind>` and the message's JSON (one line) as data."""
    kind = event.WhichOneof("event") or "message"
    return b"event: " + kind.encode() + b"\ndata: " + encode(event) + b"\n\n"


class _Stream:
    """One open event stream: its queue and what it last told the station."""

    def __init__(self, station: str, token: str, queue_events: int) -> None:
        self.station = station
        self.token = token  # kept in memory only, to end the stream when it is revoked
        self.queue: asyncio.Queue[exchange_pb2.StationEvent | None] = asyncio.Queue(queue_events)
        self.closed = False
        self.transport: asyncio.Transport | None = None
        self.hello: exchange_pb2.StationExchange | None = None
        self.tally: dict[str, tuple[bool, bool]] = {}
        self.talk: dict[str, tuple[bool, str]] = {}

    def offer(self, event: exchange_pb2.StationEvent) -> None:
        if self.closed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            metrics.STATION_STREAMS_DROPPED.inc()
            log.info("station_stream_too_slow", station=self.station)
            self.end(abort=True)

    def end(self, *, abort: bool) -> None:
        """End the stream; `abort` also drops the connection (a reader that stopped reading)."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)
        if abort and self.transport is not None:
            self.transport.abort()


class StationEvents:
    """The `/exchange/<station>` routes and every station's open event streams."""

    def __init__(
        self,
        credentials: CredentialBook,
        productions: KvMirror[mixer_pb2.Production],
        watch: SwitcherWatch,
        cues: CueDesk,
        base_url: Callable[[], str],
        *,
        keepalive_s: float = KEEPALIVE_S,
        queue_events: int = QUEUE_EVENTS,
    ) -> None:
        self.credentials = credentials
        self.productions = productions
        self.watch = watch
        self.cues = cues
        self.base_url = base_url
        self.keepalive_s = keepalive_s
        self.queue_events = queue_events
        self.streams: dict[str, set[_Stream]] = {}
        self.closing = False

    def add_routes(self, app: web.Application) -> None:
        for path, method, handler in (
            ("/exchange/{station}", "GET", self.exchange),
            ("/exchange/{station}/events", "GET", self.events),
            ("/exchange/{station}/cues/{cue}/ack", "POST", self.ack),
        ):
            app.router.add_route(method, path, handler)
            app.router.add_route("OPTIONS", path, self.preflight)

    def start(self) -> None:
        self.watch.on_tally(self._tally_changed)
        self.watch.on_talk(self._talk_changed)
        self.cues.on_change(self._cue_changed)
        self.productions.on_change(self._feeds_changed)
        self.credentials.stations.on_change(self._credentials_changed)
        self.credentials.operators.on_change(self._credentials_changed)

    async def close(self) -> None:
        """End every stream, so that the HTTP server stops at once (they reconnect elsewhere)."""
        self.closing = True
        for streams in list(self.streams.values()):
            for stream in list(streams):
                stream.end(abort=False)
        for _ in range(50):
            if not self.streams:
                return
            await asyncio.sleep(0.02)

    # -- who asks ------------------------------------------------------------------------------

    def authorize(self, request: web.Request, station: str, *, operators: bool = True) -> Principal:
        principal = self.credentials.identify(bearer_token(request))
        if principal is None:
            raise errors.Unauthenticated("a valid bearer token is needed")
        if principal.is_operator:
            if not operators:
                raise errors.PermissionDenied("only the station acknowledges its cues")
            if self.credentials.station(station) is None:
                raise errors.NotFound(f"no station {station!r}")
            return principal
        if principal.id != station:
            raise errors.PermissionDenied("a station's token opens only its own exchange")
        return principal

    # -- what a station is told ----------------------------------------------------------------

    def feeds(self, station: str) -> exchange_pb2.StationExchange:
        known = self.credentials.station(station)
        name = known.name if known is not None else station
        return station_exchange(station, name, self.productions.values(), self.base_url())

    def _its_productions(self, station: str) -> list[mixer_pb2.Production]:
        return sorted(
            (p for p in self.productions.values() if is_source(p, station)), key=lambda p: p.id
        )

    def _tally_event(self, production: str, station: str) -> exchange_pb2.StationEvent:
        program, preview = self.watch.station_tally(production, station)
        tally = self.watch.tallies.get(production)
        return exchange_pb2.StationEvent(
            tally=exchange_pb2.StationTally(
                production=production,
                source=station,
                program=program,
                preview=preview,
                time_us=tally.time_us if tally is not None and tally.time_us else now_us(),
            )
        )

    def _talk_event(self, production: str, station: str) -> exchange_pb2.StationEvent:
        talk = self.watch.talking_to(production, station)
        return exchange_pb2.StationEvent(
            talkback=exchange_pb2.Talkback(
                production=production,
                active=talk is not None,
                operator=talk.operator if talk is not None else "",
                time_us=talk.since_us if talk is not None and talk.since_us else now_us(),
            )
        )

    def snapshot(self, stream: _Stream) -> list[exchange_pb2.StationEvent]:
        """What a stream starts with; also what the stream is then known to have been told."""
        station = stream.station
        stream.hello = self.feeds(station)
        events = [exchange_pb2.StationEvent(hello=stream.hello)]
        productions = self._its_productions(station)
        for prod in productions:
            event = self._tally_event(prod.id, station)
            stream.tally[prod.id] = (event.tally.program, event.tally.preview)
            events.append(event)
        for cue in self.cues.open_cues(station=station):
            events.append(exchange_pb2.StationEvent(cue=cue))
        for prod in productions:
            event = self._talk_event(prod.id, station)
            stream.talk[prod.id] = (event.talkback.active, event.talkback.operator)
            events.append(event)
        return events

    # -- changes -------------------------------------------------------------------------------

    def _tally_changed(
        self, production: str, before: mixer_pb2.Tally | None, after: mixer_pb2.Tally | None
    ) -> None:
        sources = {e.source for t in (before, after) if t is not None for e in t.sources}
        for station in sources & self.streams.keys():
            event = self._tally_event(production, station)
            now = (event.tally.program, event.tally.preview)
            for stream in list(self.streams.get(station, ())):
                if stream.tally.get(production) != now:
                    stream.tally[production] = now
                    stream.offer(event)

    def _talk_changed(self, production: str, _talks: list[mixer_pb2.TalkState]) -> None:
        for station, streams in list(self.streams.items()):
            event = self._talk_event(production, station)
            now = (event.talkback.active, event.talkback.operator)
            for stream in list(streams):
                if stream.talk.get(production, (False, "")) != now:
                    stream.talk[production] = now
                    stream.offer(event)

    def _cue_changed(self, cue: exchange_pb2.Cue) -> None:
        for stream in list(self.streams.get(cue.station, ())):
            stream.offer(exchange_pb2.StationEvent(cue=cue))

    def _feeds_changed(self, _key: str, _value: Any) -> None:
        for station, streams in list(self.streams.items()):
            hello = self.feeds(station)
            for stream in list(streams):
                if stream.hello != hello:
                    stream.hello = hello
                    stream.offer(exchange_pb2.StationEvent(hello=hello))

    def _credentials_changed(
        self, _key: str, _value: ingest_pb2.Station | operators_pb2.Operator | None
    ) -> None:
        for station, streams in list(self.streams.items()):
            for stream in list(streams):
                principal = self.credentials.identify(stream.token)
                allowed = principal is not None and (
                    principal.id == station
                    if not principal.is_operator
                    else self.credentials.station(station) is not None
                )
                if not allowed:
                    log.info("station_stream_revoked", station=station)
                    stream.end(abort=False)
        self._feeds_changed("", None)

    # -- HTTP ----------------------------------------------------------------------------------

    async def preflight(self, _request: web.Request) -> web.Response:
        return web.Response(status=204, headers=CORS_HEADERS)

    async def exchange(self, request: web.Request) -> web.Response:
        station = request.match_info["station"]
        try:
            self.authorize(request, station)
        except errors.BaycastError as exc:
            return error_response(exc)
        return _json(self.feeds(station))

    async def ack(self, request: web.Request) -> web.Response:
        station = request.match_info["station"]
        try:
            self.authorize(request, station, operators=False)
            by = await _ack_client(request)
            cue = await self.cues.acknowledge(station, request.match_info["cue"], by)
        except errors.BaycastError as exc:
            return error_response(exc)
        return _json(cue)

    async def events(self, request: web.Request) -> web.StreamResponse:
        station = request.match_info["station"]
        try:
            self.authorize(request, station)
            if self.closing:
                raise errors.Unavailable("this instance is stopping: connect again")
        except errors.BaycastError as exc:
            return error_response(exc)
        stream = _Stream(station, bearer_token(request), self.queue_events)
        transport = request.transport
        stream.transport = transport if isinstance(transport, asyncio.Transport) else None
        self.streams.setdefault(station, set()).add(stream)
        # Registered before the snapshot, with no await between: no change falls in a gap.
        first = self.snapshot(stream)
        response = web.StreamResponse(
            status=200,
            headers={
                **CORS_HEADERS,
                "Content-Type": EVENT_STREAM,
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # a reverse proxy must not hold events back
            },
        )
        metrics.STATION_STREAMS.inc()
        log.info("station_stream_opened", station=station)
        try:
            await response.prepare(request)
            await self._write(response, f"retry: {RETRY_MS}\n\n".encode())
            for event in first:
                await self._write(response, sse(event))
            while True:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), self.keepalive_s)
                except TimeoutError:
                    await self._write(response, b": keepalive\n\n")
                    continue
                if item is None:
                    break
                await self._write(response, sse(item))
        except (OSError, TimeoutError) as exc:  # the station went away or stopped reading
            log.info("station_stream_lost", station=station, error=type(exc).__name__)
            stream.end(abort=True)
        finally:
            stream.closed = True
            streams = self.streams.get(station)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self.streams[station]
            metrics.STATION_STREAMS.dec()
        return response

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            await response.write(data)


def _json(message: Any) -> web.Response:
    return web.Response(body=encode(message), content_type="application/json", headers=CORS_HEADERS)


async def _ack_client(request: web.Request) -> str:
    """Which station client acknowledges: the optional body `{"by": "page"}`."""
    if request.content_length is not None and request.content_length > MAX_ACK_BODY_BYTES:
        raise errors.PayloadTooLarge(f"the body is over {MAX_ACK_BODY_BYTES} bytes")
    raw = await request.content.read(MAX_ACK_BODY_BYTES + 1)
    if len(raw) > MAX_ACK_BODY_BYTES:
        raise errors.PayloadTooLarge(f"the body is over {MAX_ACK_BODY_BYTES} bytes")
    if not raw.strip():
        return DEFAULT_ACK_BY
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise errors.InvalidArgument("the body is not JSON") from None
    if not isinstance(body, dict) or set(body) - {"by"}:
        raise errors.InvalidArgument('the body is {"by": "<client>"} or nothing', field="by")
    by = body.get("by", DEFAULT_ACK_BY)
    if not isinstance(by, str) or not CLIENT_NAME.match(by):
        raise errors.InvalidArgument("by is 1-32 of a-z, 0-9 and '-'", field="by")
    return by
