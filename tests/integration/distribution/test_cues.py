"""A station's exchange end to end: its event stream, cues and their acknowledgements.

A real ingest with two stations publishing, a real mixer running their production, the
distribution service. Station 广州台 reads its event stream (Server-Sent Events over aiohttp):
hello, its tally (and the tally after a cut), talkback from the mixer, a cue the director sends
(as operator zhang), its own acknowledgement and the clear. The director, a NATS subscriber on
`prod.<p>.cue`, sees the acknowledgement; the ASRUN stream has the cue, the acknowledgement and
the clear; `baycast ctl cue --wait` prints who acknowledged; wrong tokens get 401, another
station's token 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from nats.js.api import DeliverPolicy

from services.common import errors
from services.common.bus import decode, subject
from services.common.credentials import with_new_token
from services.common.gen.baycast.v1 import (
    exchange_pb2,
    mixer_pb2,
    operators_pb2,
    rundown_pb2,
)
from tests.integration.distribution.exchange_show import (
    ExchangeShow,
    exchange_show,
    tally_of,
    wait_until,
)
from tests.support.mixer import command, unique
from tests.support.nats import NatsServer

pytestmark = pytest.mark.timeout(120)

TEXT = "30 秒后上场 / 30 s to air"
Cmd = exchange_pb2.ExchangeCommand


class EventStream:
    """A station's event stream read in the background: each (kind, StationEvent) in order."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.retry = ""
        self.events: list[tuple[str, exchange_pb2.StationEvent]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        kind, data = "", b""
        while line := await self.response.content.readline():
            line = line.rstrip(b"\n")
            if line.startswith(b"retry: "):
                self.retry = line[7:].decode()
            elif line.startswith(b"event: "):
                kind = line[7:].decode()
            elif line.startswith(b"data: "):
                data = line[6:]
            elif not line and kind:
                self.events.append((kind, decode(data, exchange_pb2.StationEvent)))
                kind, data = "", b""
                self._changed.set()

    async def next(
        self,
        kind: str,
        accept: Callable[[exchange_pb2.StationEvent], bool] = lambda _e: True,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> tuple[int, exchange_pb2.StationEvent]:
        """The first event of `kind` at index >= `after` that `accept`s, and its index."""
        async with asyncio.timeout(timeout):
            while True:
                for i, (k, event) in enumerate(self.events[after:], after):
                    if k == kind and accept(event):
                        return i, event
                self._changed.clear()
                await self._changed.wait()

    async def ended(self) -> None:
        """Until the server ends the stream."""
        await self._task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self.response.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def add_operator(show: ExchangeShow) -> str:
    """An operator in the `operators` bucket, once distribution's mirror has it; its token."""
    record, token = with_new_token(
        operators_pb2.Operator(id=unique("zhang"), name="张导", role=operators_pb2.ROLE_DIRECTOR)
    )
    bucket = await show.bus.kv("operators", operators_pb2.Operator)
    await bucket.put(record.id, record)
    await wait_until(
        lambda: show.dist.credentials.operators.get(record.id) is not None, "operator mirrored"
    )
    return token


async def asrun_entries(
    show: ExchangeShow, want: Callable[[list[rundown_pb2.AsRunEntry]], bool]
) -> list[rundown_pb2.AsRunEntry]:
    """The production's as-run log (the ASRUN stream) once `want` holds for it."""
    js = show.bus.nc.jetstream()
    entries: list[rundown_pb2.AsRunEntry] = []
    sub = await js.subscribe(
        subject("prod", show.prod, "asrun"),
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    try:
        async with asyncio.timeout(10):
            while not want(entries):
                msg = await sub.next_msg(timeout=10)
                entries.append(decode(msg.data, rundown_pb2.AsRunEntry))
    finally:
        await sub.unsubscribe()
    return entries


async def test_a_station_reads_tally_talkback_and_cues_and_acknowledges(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with (
        exchange_show(nats_server.url, tmp_path) as show,
        aiohttp.ClientSession() as http,
    ):
        a, b, prod = show.a, show.b, show.prod
        base = show.dist.base_url()
        operator_token = await add_operator(show)
        director: list[exchange_pb2.Cue] = []
        states: list[exchange_pb2.ExchangeState] = []

        async def on_cue(cue: exchange_pb2.Cue, _subject: str) -> None:
            director.append(cue)

        async def on_state(state: exchange_pb2.ExchangeState, _subject: str) -> None:
            states.append(state)

        await show.bus.subscribe(subject("prod", prod, "cue"), exchange_pb2.Cue, on_cue)
        await show.bus.subscribe(
            subject("prod", prod, "exchange", "state"), exchange_pb2.ExchangeState, on_state
        )

        # -- refusals: the same 401 whether or not the station exists ----------------------------
        events = f"{show.http}/exchange/{a}/events"
        for url, headers, status in (
            (events, {}, 401),
            (events, bearer("not-a-token"), 401),
            (f"{show.http}/exchange/nosuch/events", bearer("not-a-token"), 401),
            (events, bearer(show.tokens[b]), 403),
            (f"{show.http}/exchange/{a}", bearer(show.tokens[b]), 403),
            (f"{show.http}/exchange/nosuch", bearer(operator_token), 404),
        ):
            async with http.get(url, headers=headers) as resp:
                assert resp.status == status, (url, await resp.text())
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                if status == 401:
                    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        async with http.options(events) as resp:
            assert resp.status == 204
            assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]

        # -- the stream: hello, tally, talkback ------------------------------------------------
        response = await http.get(events, headers=bearer(show.tokens[a]))
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        stream = EventStream(response)
        try:
            _, hello = await stream.next("hello")
            assert stream.events[0][0] == "hello" and stream.retry == "2000"
            exchange = hello.hello
            assert (exchange.station, exchange.name) == (a, "广州台")
            assert exchange.feeds[0].handle == f"return/{a}"
            assert exchange.feeds[0].whep_url == f"{base}/whep/{prod}/return/{a}"
            assert [f.handle for f in exchange.feeds[1:4]] == ["program", "clean", "multiview"]
            assert exchange.feeds[4].handle == f"source/{b}"
            assert exchange.events_url == f"{base}/exchange/{a}/events"
            async with http.get(f"{show.http}/exchange/{a}", headers=bearer(show.tokens[a])) as r:
                assert r.status == 200
                assert decode(await r.read(), exchange_pb2.StationExchange) == exchange
            async with http.get(f"{show.http}/exchange/{a}", headers=bearer(operator_token)) as r:
                assert r.status == 200

            _, tally = await stream.next("tally")
            assert (tally.tally.production, tally.tally.source) == (prod, a)
            assert tally.tally.program and not tally.tally.preview
            _, talk = await stream.next("talkback")
            assert talk.talkback.production == prod and not talk.talkback.active

            mark = len(stream.events)
            state = await show.cut(b)
            _, tally = await stream.next("tally", after=mark)
            assert (tally.tally.program, tally.tally.preview) == tally_of(state, a)
            assert not tally.tally.program

            talk_on = mixer_pb2.MixerCommand(
                talk=mixer_pb2.MixerCommand.Talk(source="talk_zhang", stations=[a], on=True)
            )
            await show.bus.request(
                subject("prod", prod, "mixer", "cmd"),
                talk_on,
                mixer_pb2.MixerState,
                operator="zhang",
            )
            _, talk = await stream.next("talkback", lambda e: e.talkback.active, after=mark)
            assert talk.talkback.operator == "zhang" and talk.talkback.production == prod
            talk_on.talk.on = False
            await command(show.bus, prod, talk_on)
            await stream.next("talkback", lambda e: not e.talkback.active, after=mark)

            # -- a cue, its acknowledgement, its clear -----------------------------------------
            countdown = time.time_ns() // 1000 + 30_000_000
            mark = len(stream.events)
            reply = await show.exchange(
                Cmd(cue=Cmd.SendCue(stations=[a], text=TEXT, countdown_to_us=countdown)),
                operator="zhang",
            )
            (sent,) = reply.cues
            assert (sent.station, sent.text, sent.sent_by) == (a, TEXT, "zhang")
            assert sent.countdown_to_us == countdown and sent.production == prod
            _, cue = await stream.next("cue", lambda e: e.cue.id == sent.id, after=mark)
            assert cue.cue == sent and cue.cue.acknowledged_at_us == 0

            ack = f"{show.http}/exchange/{a}/cues/{sent.id}/ack"
            for url, token, status in (
                (ack, show.tokens[b], 403),
                (f"{show.http}/exchange/{b}/cues/{sent.id}/ack", show.tokens[b], 404),
                (f"{show.http}/exchange/{a}/cues/0123456789ab/ack", show.tokens[a], 404),
                (ack, "not-a-token", 401),
            ):
                async with http.post(url, headers=bearer(token), json={"by": "page"}) as r:
                    assert r.status == status, (url, await r.text())
            async with http.post(ack, headers=bearer(show.tokens[a]), json={"by": "page"}) as r:
                assert r.status == 200
                acked = decode(await r.read(), exchange_pb2.Cue)
            assert acked.id == sent.id and acked.acknowledged_by == "page"
            assert sent.sent_at_us <= acked.acknowledged_at_us <= time.time_ns() // 1000
            async with http.post(
                ack, headers=bearer(show.tokens[a]), json={"by": "station-client"}
            ) as r:
                assert r.status == 200
                assert decode(await r.read(), exchange_pb2.Cue) == acked  # once only
            _, cue = await stream.next("cue", lambda e: e.cue.acknowledged_at_us > 0, after=mark)
            assert cue.cue == acked

            await wait_until(
                lambda: any(c.id == sent.id and c.acknowledged_at_us for c in director),
                "the director sees the acknowledgement",
            )
            assert [c for c in director if c.id == sent.id] == [sent, acked]
            await wait_until(
                lambda: any(
                    [c.id for c in s.cues] == [sent.id] and s.cues[0].acknowledged_at_us
                    for s in states
                ),
                "the exchange state has the acknowledged cue",
            )

            listed = await show.exchange(Cmd(cues=Cmd.ListCues()))
            assert list(listed.cues) == [acked]
            cleared = await show.exchange(Cmd(clear=Cmd.ClearCue(id=sent.id)), operator="zhang")
            assert cleared.cues[0].cleared and cleared.cues[0].acknowledged_by == "page"
            _, cue = await stream.next("cue", lambda e: e.cue.cleared, after=mark)
            assert cue.cue.id == sent.id
            assert list((await show.exchange(Cmd(cues=Cmd.ListCues()))).cues) == []
            with pytest.raises(errors.InvalidArgument) as refused:
                await show.exchange(Cmd(cue=Cmd.SendCue(stations=[a], text="")))
            assert refused.value.field == "cue.text"
            with pytest.raises(errors.InvalidArgument, match="not a source") as refused:
                await show.exchange(Cmd(cue=Cmd.SendCue(stations=["nosuch"], text="x")))
            assert refused.value.field == "cue.stations"
        finally:
            await stream.close()

        # -- the as-run log --------------------------------------------------------------------
        def mine(entries: list[rundown_pb2.AsRunEntry]) -> list[rundown_pb2.AsRunEntry]:
            return [e for e in entries if sent.id in e.detail]

        entries = mine(await asrun_entries(show, lambda got: len(mine(got)) >= 3))
        assert [e.cue for e in entries] == ["cue", "cue-ack", "cue-clear"]
        assert [e.operator for e in entries] == ["zhang", "", "zhang"]
        assert TEXT in entries[0].detail and "page" in entries[1].detail
        assert all(e.production == prod and e.ok for e in entries)

        # -- the operator's command line -------------------------------------------------------
        nats = ["--nats", show.bus.url]
        ret = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "ctl", *nats, "return", "url", prod, a,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(ret.communicate(), 30)
        assert ret.returncode == 0
        assert out.decode().split("\n")[:2] == [
            f"return  {base}/whep/{prod}/return/{a}",
            f"events  {base}/exchange/{a}/events",
        ]
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "ctl", *nats,
            "cue", prod, a, TEXT, "--in", "30s", "--wait", "20",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            assert cli.stdout is not None
            first = await asyncio.wait_for(cli.stdout.readline(), 30)
            cue_id, station = first.decode().strip().split("\t")
            assert station == a
            async with http.post(
                f"{show.http}/exchange/{a}/cues/{cue_id}/ack",
                headers=bearer(show.tokens[a]),
                data=json.dumps({"by": "page"}),
            ) as r:
                assert r.status == 200
            rest = await asyncio.wait_for(cli.stdout.read(), 30)
            assert await cli.wait() == 0
            assert rest.decode().startswith(f"acknowledged {cue_id} by {a} (page) at ")
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()

        async def ctl(*argv: str) -> str:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "services.cli", "ctl", *nats, *argv,
                stdout=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, argv
            return out.decode()

        table = (await ctl("cue", "list", prod)).splitlines()
        assert table[0].split() == [
            "ID", "STATION", "TEXT", "COUNTDOWN", "SENT", "BY", "ACKNOWLEDGED"
        ]  # fmt: skip
        assert len(table) == 2 and table[1].startswith(cue_id) and "(page)" in table[1]
        assert (await ctl("exchange", "viewers", prod)).strip() == "(none)"

        # -- drain: open streams end, so the service stops at once ---------------------------------
        response = await http.get(events, headers=bearer(show.tokens[a]))
        stream = EventStream(response)
        await stream.next("hello")
        loop = asyncio.get_running_loop()
        began = loop.time()
        await show.dist.stop()
        assert loop.time() - began < 5.0
        await asyncio.wait_for(stream.ended(), 5)
