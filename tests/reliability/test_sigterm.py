"""Fault 7: SIGTERM to each service while commands are in flight.

Ingest, mixer and graphics run as processes, each receiving a steady stream of commands that
change durable state (a station added, the master gain set, a ticker headline added). On SIGTERM
each must turn readiness false before it stops (a 503 from /readyz: a late answer is waited for,
a refused connection is not "not ready"), exit 0 within its grace period, and every command it
acknowledged must be in its key-value bucket afterwards.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from dataclasses import dataclass, field

import pytest

from services.common import errors
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import graphics_pb2, ingest_pb2, mixer_pb2
from services.graphics.desk import BUCKET as GFX_BUCKET
from services.ingest.stations import BUCKET as STATIONS_BUCKET
from services.mixer.service import STATE_BUCKET
from tests.reliability.helpers import (
    STATION_COMMANDS,
    UNREADY,
    create_production,
    gfx_command,
    graphics_process,
    ingest_process,
    mixer_process,
    processes,
    readyz,
)
from tests.support.nats import NatsServer
from tests.support.services import ServiceProcess

pytestmark = pytest.mark.timeout(120)

DRAIN_SECONDS = 8.0
UNREADY_SECONDS = 1.0
SEND_EVERY_S = 0.02
MAX_COMMANDS = 150
# Near the figures of docs/RELIABILITY.md (row 7), with room for a busy 2-core box: readiness
# false (503) 5-19 ms after SIGTERM, exit 0 after 1.2-1.74 s (the 1 s unready period, then the
# drain), 53-63 commands acknowledged by each.
UNREADY_WITHIN_S = 0.08
EXIT_WITHIN_S = 3.0
ACKED_AT_LEAST = 30


@dataclass
class Watch:
    """What one service did after SIGTERM."""

    unready_at: float = 0.0  # seconds after SIGTERM its first 503 answer arrived
    answers: list[int | None] = field(default_factory=list)  # /readyz until then
    exited_at: float = 0.0
    code: int | None = None
    acked: list[int] = field(default_factory=list)
    refused: int = 0


async def watch_exit(proc: ServiceProcess, sent_at: float, out: Watch) -> None:
    assert proc.proc is not None
    while proc.proc.poll() is None and time.monotonic() - sent_at < DRAIN_SECONDS + 5:
        if not out.unready_at:
            answer = await readyz(proc)
            out.answers.append(answer)
            if answer == UNREADY:
                out.unready_at = time.monotonic() - sent_at
        await asyncio.sleep(0.01 if not out.unready_at else 0.05)
    out.code = await asyncio.to_thread(proc.wait, 5)
    out.exited_at = time.monotonic() - sent_at


async def test_sigterm_drains_each_service_without_losing_an_acked_command(
    nats_server: NatsServer, bus: Bus, tmp_path
) -> None:
    tag = uuid.uuid4().hex[:5]
    prod_id = f"term-{tag}"
    env = {
        "BAYCAST_DRAIN_SECONDS": str(DRAIN_SECONDS),
        "BAYCAST_UNREADY_SECONDS": str(UNREADY_SECONDS),
    }
    services = {
        "ingest": ingest_process(nats_server.url, tmp_path, **env),
        "mixer": mixer_process(nats_server.url, tmp_path, **env),
        "graphics": graphics_process(nats_server.url, tmp_path, **env),
    }
    watches = {name: Watch() for name in services}

    async def send_station(i: int) -> None:
        cmd = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=f"t{tag}-{i}", name="站"))
        await bus.request(STATION_COMMANDS, cmd, ingest_pb2.StationReply, timeout=2)

    async def send_gain(i: int) -> None:
        cmd = mixer_pb2.MixerCommand(audio=mixer_pb2.MixerCommand.Audio(gain_db=-0.01 * i))
        await bus.request(
            subject("prod", prod_id, "mixer", "cmd"), cmd, mixer_pb2.MixerState, timeout=2
        )

    async def send_headline(i: int) -> None:
        cmd = graphics_pb2.GfxCommand(
            ticker_add=graphics_pb2.GfxTickerAdd(instance="news", item=f"h{i}")
        )
        await bus.request(
            subject("prod", prod_id, "gfx", "cmd"), cmd, graphics_pb2.GfxReply, timeout=2
        )

    senders = {"ingest": send_station, "mixer": send_gain, "graphics": send_headline}

    async def keep_sending(name: str, stop: asyncio.Event) -> None:
        for i in range(1, MAX_COMMANDS + 1):
            if stop.is_set():
                return
            try:
                await senders[name](i)
                watches[name].acked.append(i)
            except errors.BaycastError:
                watches[name].refused += 1
            await asyncio.sleep(SEND_EVERY_S)

    with processes(*services.values()):
        await create_production(
            bus, mixer_pb2.Production(id=prod_id, name="终止", width=1280, height=720)
        )
        await gfx_command(
            bus,
            prod_id,
            graphics_pb2.GfxCommand(
                show=graphics_pb2.GfxShow(template="ticker", instance="news", cut=True)
            ),
        )
        stop = asyncio.Event()
        sending = [asyncio.create_task(keep_sending(n, stop)) for n in services]
        await asyncio.sleep(0.5)
        sent_at = time.monotonic()
        for proc in services.values():
            proc.signal(signal.SIGTERM)
        await asyncio.gather(*(watch_exit(services[n], sent_at, watches[n]) for n in services))
        stop.set()
        await asyncio.gather(*sending)

    stations = await bus.kv(STATIONS_BUCKET, ingest_pb2.Station)
    stored_stations = {k for k in await stations.keys() if k.startswith(f"t{tag}-")}
    state = await (await bus.kv(STATE_BUCKET, mixer_pb2.SwitcherState)).get(prod_id)
    scene = await (await bus.kv(GFX_BUCKET, graphics_pb2.GfxScene)).get(prod_id)
    assert state is not None and scene is not None
    news = next(i for i in scene.value.instances if i.id == "news")
    headlines = set(json.loads(news.fields["items"]))

    print(
        "\nfault 7: "
        + "; ".join(
            f"{n}: unready {w.unready_at * 1000:.0f} ms, exit {w.code} after {w.exited_at:.2f} s,"
            f" {len(w.acked)} commands acked, {w.refused} refused"
            for n, w in watches.items()
        )
    )
    for name, w in watches.items():
        assert w.code == 0, (name, services[name].logs()[-3000:])
        # Said "not ready" (a 503) before it exited, and soon after the signal.
        assert 0 < w.unready_at < w.exited_at, (name, w)
        assert w.unready_at <= UNREADY_WITHIN_S, (name, w)
        assert w.exited_at <= DRAIN_SECONDS, (name, w)  # the grace period
        assert UNREADY_SECONDS <= w.exited_at <= EXIT_WITHIN_S, (name, w)
        assert len(w.acked) >= ACKED_AT_LEAST, (name, w)
    # Every acknowledged command is in the key-value state.
    assert {f"t{tag}-{i}" for i in watches["ingest"].acked} <= stored_stations
    last_gain = -0.01 * watches["mixer"].acked[-1]
    assert state.value.master_gain_db <= last_gain + 1e-9, (state.value.master_gain_db, last_gain)
    assert {f"h{i}" for i in watches["graphics"].acked} <= headlines
