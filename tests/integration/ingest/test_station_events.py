"""The station client's side of the exchange: tally, cues and talkback from distribution's event
stream, cue acknowledgements, reconnection, and `baycast station` logging them (Enter acks)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from services.common.gen.baycast.v1 import exchange_pb2
from services.station.events import (
    StationEventStream,
    StationFollower,
    StreamRefused,
    exchange_url_from_whip,
)
from tests.support.exchange import running_exchange
from tests.support.mixer import unique
from tests.support.nats import NatsServer
from tests.support.station import whip_url

pytestmark = pytest.mark.timeout(90)


def stations() -> tuple[str, str, list[tuple[str, str]]]:
    """Two stations of ids of their own (the session's nats-server keeps every station)."""
    gz, sz = unique("gz"), unique("sz")
    return gz, sz, [(gz, "广州台"), (sz, "深圳台")]


async def until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    for _ in range(int(timeout / 0.05)):
        value = check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what or check} still false after {timeout} s")


def kinds(events: list[exchange_pb2.StationEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


async def test_station_events_bring_tally_and_cues_and_take_acknowledgements(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    prod = unique("show")
    gz, sz, both = stations()
    async with running_exchange(
        nats_server.url, str(tmp_path / "data"), both, production_id=prod
    ) as x:
        async with aiohttp.ClientSession() as http:
            exchange = await exchange_url_from_whip(http, whip_url(x.ingest, gz))
        assert exchange == x.exchange_url

        events: list[exchange_pb2.StationEvent] = []
        stop = asyncio.Event()
        async with StationEventStream(exchange, gz, x.tokens[gz]) as stream:
            follower = StationFollower(stream)
            task = asyncio.create_task(follower.run(stop, events.append))
            try:
                await until(lambda: "talkback" in kinds(events), what="the first snapshot")
                # The snapshot: hello first (its return first among the feeds), then tally.
                assert kinds(events)[0] == "hello"
                hello = events[0].hello
                assert hello.station == gz and hello.name == "广州台"
                assert hello.feeds[0].handle == f"return/{gz}"
                assert hello.feeds[0].whep_url == f"{exchange}/whep/{prod}/return/{gz}"
                assert prod in follower.tally  # where gz stands now, whatever that is

                await x.cut(sz)
                await x.preview(sz)
                await until(lambda: follower.tally.get(prod) == (False, False), what="gz off")
                await x.cut(gz)
                await until(lambda: follower.tally.get(prod) == (True, False), what="gz on air")
                assert follower.on_air
                await x.preview(gz)
                await until(lambda: follower.tally.get(prod) == (True, True), what="gz on both")
                await x.cut(sz)
                await until(lambda: follower.tally.get(prod) == (False, True), what="gz preview")
                assert not follower.on_air

                countdown = time.time_ns() // 1000 + 30_000_000
                sent = await x.send_cue(gz, "30 秒后上场 / 30 s to air", countdown)
                await until(lambda: sent.id in follower.cues, what="the cue")
                cue = follower.cues[sent.id]
                assert cue.text == "30 秒后上场 / 30 s to air"
                assert cue.countdown_to_us == countdown and cue.acknowledged_at_us == 0
                assert follower.newest_open_cue() == cue

                acknowledged = await follower.acknowledge_newest()
                assert acknowledged is not None and acknowledged.id == sent.id
                assert acknowledged.acknowledged_by == "station-client"
                on_bus = await x.wait_cue(lambda c: c.id == sent.id and c.acknowledged_at_us > 0)
                assert on_bus.acknowledged_by == "station-client"
                assert on_bus.acknowledged_at_us >= sent.sent_at_us
                assert follower.newest_open_cue() is None
                assert await follower.acknowledge_newest() is None  # nothing left to ack

                await x.clear_cue(sent.id)
                await until(lambda: sent.id not in follower.cues, what="the cue cleared")
                assert stream.connections == 1
            finally:
                stop.set()
                await asyncio.wait_for(task, 5)

        # A wrong token and another station's token are final refusals, not retried.
        for token, status in (("not-a-token", 401), (x.tokens[sz], 403)):
            async with StationEventStream(exchange, gz, token) as refused_stream:
                with pytest.raises(StreamRefused) as refused:
                    async for _event in refused_stream.events():
                        pass
            assert refused.value.status == status
            assert refused_stream.connections == 0


async def test_stream_reconnects_with_backoff_and_keeps_state(port: int) -> None:
    """A scripted event-stream server that hangs up after each snapshot: the client comes back
    (after the server's `retry:`), the new snapshot replaces the old state, comments and split
    writes change nothing."""
    opened: list[float] = []

    async def events(request: web.Request) -> web.StreamResponse:
        assert request.headers["Authorization"] == "Bearer tok"
        opened.append(time.monotonic())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        program = len(opened) == 1
        tally = json.dumps({"tally": {"production": "p", "program": program}})
        hello = json.dumps({"hello": {"station": "gz", "feeds": [{"production": "p"}]}})
        body = (
            f"retry: 300\n\n: hi\nevent: hello\ndata: {hello}\n\n"
            f"event: tally\ndata: {tally}\r\n\r\n"
        )
        for i in range(0, len(body), 7):  # split anywhere, even inside CRLF
            await response.write(body[i : i + 7].encode())
        return response

    app = web.Application()
    app.router.add_get("/exchange/gz/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        stop = asyncio.Event()
        seen: list[exchange_pb2.StationEvent] = []
        async with StationEventStream(
            f"http://127.0.0.1:{port}", "gz", "tok", retry_min_s=0.05
        ) as stream:
            follower = StationFollower(stream)
            task = asyncio.create_task(follower.run(stop, seen.append))
            await until(lambda: len(opened) >= 3, what="two reconnections")
            stop.set()
            await asyncio.wait_for(task, 5)
        assert kinds(seen)[:4] == ["hello", "tally", "hello", "tally"]
        assert seen[1].tally.program and not seen[3].tally.program
        assert follower.tally == {"p": (False, False)}
        # The server asked for 300 ms between attempts: longer than the client's own 50 ms.
        assert min(b - a for a, b in itertools.pairwise(opened)) >= 0.28
    finally:
        await runner.cleanup()


def start_with_stdin(
    log_path: Path, argv: list[str], env: dict[str, str]
) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            argv, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT
        )


def log_lines(path: Path) -> list[dict[str, Any]]:
    lines = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


async def test_baycast_station_logs_tally_and_cues_and_enter_acknowledges(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    prod = unique("show")
    gz, sz, both = stations()
    async with running_exchange(
        nats_server.url, str(tmp_path / "data"), both, production_id=prod
    ) as x:
        log_path = tmp_path / "station.log"
        argv = [sys.executable, "-m", "services.cli", "station", "--whip", whip_url(x.ingest, gz)]
        argv += ["--size", "320x180", "--mode", "packets", "--fps", "10"]
        env = {**os.environ, "BAYCAST_STATION_TOKEN": x.tokens[gz], "BAYCAST_LOG_FORMAT": "json"}
        proc = start_with_stdin(log_path, argv, env)
        assert proc.stdin is not None

        def logged(event: str, **fields: Any) -> dict[str, Any] | None:
            for line in log_lines(log_path):
                if line.get("event") == event and all(line.get(k) == v for k, v in fields.items()):
                    return line
            return None

        def tallies() -> list[dict[str, Any]]:
            return [line for line in log_lines(log_path) if line.get("event") == "tally"]

        try:
            following = await until(lambda: logged("event_stream_open"), 30, "the event stream")
            assert following["station"] == gz
            assert logged("following_events", exchange=x.exchange_url) is not None
            # gz (the production's first source) starts on program: take it off first.
            await x.cut(sz)
            await x.preview(sz)
            await until(lambda: logged("tally", program=False, preview=False), what="gz off")
            await x.cut(gz)
            await until(lambda: tallies()[-1]["program"], what="gz on air")
            assert tallies()[-1]["production"] == prod and tallies()[-1]["preview"] is False

            countdown = time.time_ns() // 1000 + 20_000_000
            sent = await x.send_cue(gz, "准备连线 Stand by", countdown)
            line = await until(lambda: logged("cue", cue=sent.id), what="the cue logged")
            assert line["text"] == "准备连线 Stand by"
            assert 15 < line["countdown_s"] <= 20

            proc.stdin.write(b"\n")  # Enter
            proc.stdin.flush()
            acked = await x.wait_cue(lambda c: c.id == sent.id and c.acknowledged_at_us > 0)
            assert acked.acknowledged_by == "station-client"
            await until(lambda: logged("cue_acknowledged", cue=sent.id), what="ack logged")

            proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.wait, 15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert x.tokens[gz] not in log_path.read_text()


async def test_no_exchange_at_the_url_is_final_only_when_asked(port: int) -> None:
    """A 404 before any connection means no exchange there (ingest's own origin, no proxy):
    final for `baycast station`'s default events, retried when events were asked for."""
    asked: list[str] = []

    async def absent(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.Response(status=404, text="404: Not Found")

    app = web.Application()
    app.router.add_get("/exchange/gz/events", absent)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        async with StationEventStream(base, "gz", "tok", absent_is_final=True) as stream:
            with pytest.raises(StreamRefused) as refused:
                async for _event in stream.events():
                    pass
        assert refused.value.status == 404 and asked == ["/exchange/gz/events"]

        stop = asyncio.Event()
        async with StationEventStream(base, "gz", "tok", retry_min_s=0.05) as stream:
            task = asyncio.create_task(StationFollower(stream).run(stop))
            await until(lambda: len(asked) >= 3, what="retries after 404")
            stop.set()
            await asyncio.wait_for(task, 5)
    finally:
        await runner.cleanup()
