"""The event stream: `GET /api/events` as Server-Sent Events, one bus subscription fanned out.

Why SSE and not a WebSocket: the stream only flows to the page (commands go as POSTs, each
checked for its CSRF token, role and origin), a browser's EventSource sends the session cookie
and reconnects by itself, and a controller such as Companion reads it with a bearer header over
plain HTTP through any proxy. A WebSocket would add a second way in to protect (browsers cannot
put an Authorization header on one, and a cross-site page can open one with the cookie unless
every handshake's Origin is checked) for a direction the pages do not need.

A stream starts with `hello` (who is connected, to what), then a snapshot of the current state
(the same events the bus carries, plus `gfx.scene`), then `snapshot` (the page is up to date),
then every event as it happens, as `event: <name>` and `data: <JSON>`. Each client has a bounded
queue: a client that falls that far behind is dropped (and reconnects to a fresh snapshot), so
one slow page never holds the others back. A comment line every 15 s keeps proxies from closing
an idle stream. Streams end when their operator's token is rotated or revoked, the session is
closed, or the service drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from services.common import errors
from services.control import metrics
from services.control.access import Caller
from services.control.show_state import Event

KEEPALIVE_S = 15.0
RETRY_MS = 2000

log = structlog.get_logger("control.events")


class EventClient:
    def __init__(self, caller: Caller, production: str | None, queue_size: int) -> None:
        self.caller = caller
        self.production = production
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=queue_size)
        self.closed_reason = ""

    def wants(self, event: Event) -> bool:
        return not event.production or self.production in (None, event.production)

    def offer(self, event: Event) -> bool:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def close(self, reason: str) -> None:
        """End the stream: what is queued is dropped, the writer sees the end at once."""
        if self.closed_reason:
            return
        self.closed_reason = reason
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class EventHub:
    """Every open stream; each bus event goes to the streams that want it."""

    def __init__(self, queue_size: int, max_clients: int) -> None:
        self.queue_size = queue_size
        self.max_clients = max_clients
        self.clients: set[EventClient] = set()
        self.closed = False

    def open(self, caller: Caller, production: str | None) -> EventClient:
        if self.closed:
            raise errors.Unavailable("the service is draining: connect again")
        if len(self.clients) >= self.max_clients:
            raise errors.Unavailable(f"{self.max_clients} event streams are open; try again later")
        client = EventClient(caller, production, self.queue_size)
        self.clients.add(client)
        metrics.EVENT_CLIENTS.set(len(self.clients))
        return client

    def remove(self, client: EventClient) -> None:
        self.clients.discard(client)
        metrics.EVENT_CLIENTS.set(len(self.clients))

    def publish(self, event: Event) -> None:
        for client in list(self.clients):
            if client.wants(event) and not client.closed_reason and not client.offer(event):
                self.drop(client, "slow")

    def drop(self, client: EventClient, reason: str) -> None:
        if not client.closed_reason:
            metrics.EVENT_CLIENTS_DROPPED.labels(reason).inc()
            client.close(reason)

    def close(self) -> None:
        """End every stream and take no new one (the service drains)."""
        self.closed = True
        self.drop_where(lambda _client: True, "draining")

    def drop_where(self, stale: Callable[[EventClient], bool], reason: str) -> int:
        dropped = [c for c in self.clients if not c.closed_reason and stale(c)]
        for client in dropped:
            self.drop(client, reason)
        return len(dropped)


async def stream(
    request: web.Request,
    hub: EventHub,
    client: EventClient,
    hello: dict[str, object],
    snapshot: Callable[[], Awaitable[list[Event]]],
) -> web.StreamResponse:
    """Serve `client` as a text/event-stream until it ends (or the peer goes away)."""
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        }
    )
    try:
        await response.prepare(request)
        await response.write(f"retry: {RETRY_MS}\n".encode())
        await response.write(Event("hello", "", json.dumps(hello, ensure_ascii=False)).frame())
        for event in await snapshot():
            await response.write(event.frame())
        await response.write(Event("snapshot", "", "{}").frame())
        while True:
            try:
                live = await asyncio.wait_for(client.queue.get(), KEEPALIVE_S)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if live is None:
                break
            await response.write(live.frame())
    except (ConnectionResetError, ConnectionError):
        pass  # the page went away
    finally:
        hub.remove(client)
    if client.closed_reason:
        log.info("event_stream_closed", operator=client.caller.id, reason=client.closed_reason)
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response
