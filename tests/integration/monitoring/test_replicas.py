"""Two monitoring replicas on one nats-server: every alert is published once.

Both replicas judge every source, but only the one on duty publishes; killed, the other takes the
duty over within the lease, does not raise again what was already raised, and answers the list;
draining, a replica hands the duty over at once.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from pathlib import Path

from services.common.bus import PREFIX, Bus, subject
from services.common.gen.baycast.v1 import control_pb2, monitoring_pb2
from tests.integration.monitoring.conftest import AlertRecorder
from tests.support.nats import NatsServer
from tests.support.services import ServiceProcess, http_get_json, service_process

RAISED = monitoring_pb2.ALERT_STATE_RAISED
CLEARED = monitoring_pb2.ALERT_STATE_CLEARED


async def on_duty(proc: ServiceProcess) -> bool:
    try:
        code, status = await asyncio.to_thread(http_get_json, proc.http + "/status", 1.0)
    except OSError:
        return False
    return code == 200 and status["alerts_on_duty"] is True


async def source_state(bus: Bus, source: str, online: bool) -> None:
    state = control_pb2.SourceState(source=source, online=online, reason="" if online else "gone")
    await bus.publish(subject("source", source, "state"), state)


async def alert_list(bus: Bus) -> monitoring_pb2.AlertList:
    return await bus.request(
        subject("monitoring", "alerts"), monitoring_pb2.AlertsRequest(), monitoring_pb2.AlertList
    )


async def test_alerts_are_published_once_and_the_duty_moves_when_its_replica_dies(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    first, second, third, fourth = (f"sz{n}{tag}" for n in "abcd")
    bus = Bus(nats_server.url, "monitoring-test")
    await bus.connect()
    alerts = AlertRecorder()
    await bus.subscribe(PREFIX + "alert.*", monitoring_pb2.Alert, alerts.on_alert)
    replicas = [
        service_process("monitoring", nats_server.url, tmp_path, "monitoring") for _ in "abc"
    ]
    await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas[:2]))
    try:
        # One of them takes the duty once it has started (a status answer late on a busy host
        # reads as not on duty, so the first look may see neither).
        started = time.monotonic()
        duty = [await on_duty(r) for r in replicas[:2]]
        while not any(duty):
            assert time.monotonic() - started < 5.0, "no replica took the duty within 5 s"
            await asyncio.sleep(0.05)
            duty = [await on_duty(r) for r in replicas[:2]]
        assert sorted(duty) == [False, True]
        holder, standby = (replicas[0], replicas[1]) if duty[0] else (replicas[1], replicas[0])
        holder_name = f"monitoring-{holder.http_port}"

        # Both replicas see the source go and come back; the one on duty raises and clears it.
        await source_state(bus, first, online=False)
        _, raised = await alerts.wait_for("source_lost", first, RAISED, 5)
        await source_state(bus, first, online=True)
        await alerts.wait_for("source_lost", first, CLEARED, 5)
        await source_state(bus, second, online=False)
        _, kept = await alerts.wait_for("source_lost", second, RAISED, 5)
        # Later events from the same duty have arrived: a second raise of `first` (or clear)
        # from the other replica would have arrived before them.
        assert len(alerts.matching("source_lost", first, RAISED)) == 1
        assert len(alerts.matching("source_lost", first, CLEARED)) == 1
        assert len(alerts.matching("source_lost", second, RAISED)) == 1
        assert {a.instance for _, a in alerts.events if a.target in (first, second)} == {
            holder_name
        }
        assert raised.instance == kept.instance == holder_name

        # Whichever replica the queue group hands the request to, the list is the duty's.
        lists = [await alert_list(bus) for _ in range(6)]
        for listed in lists:
            mine = [a for a in listed.alerts if a.target in (first, second)]
            assert [(a.target, a.id) for a in mine] == [(second, kept.id)]

        # The replica on duty dies without a word: the other takes the duty over.
        assert holder.proc is not None
        holder.proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while not await on_duty(standby):
            assert time.monotonic() - killed < 5.0, "the duty did not move within 5 s"
            await asyncio.sleep(0.05)
        took = time.monotonic() - killed
        print(f"alert duty taken over {took:.2f} s after SIGKILL")

        # It publishes from now on, and did not raise again what was raised already.
        await source_state(bus, third, online=False)
        _, later = await alerts.wait_for("source_lost", third, RAISED, 5)
        assert later.instance == f"monitoring-{standby.http_port}"
        assert len(alerts.matching("source_lost", second, RAISED)) == 1
        listed = await alert_list(bus)
        mine = {a.target: a.id for a in listed.alerts if a.target in (first, second, third)}
        assert mine == {second: kept.id, third: later.id}  # the inherited one keeps its id
        # And it clears what it inherited, with the id it was raised with.
        await source_state(bus, second, online=True)
        _, cleared = await alerts.wait_for("source_lost", second, CLEARED, 5)
        assert cleared.id == kept.id

        # A draining replica hands the duty over at once, its firing record stored first.
        newcomer = replicas[2]
        await asyncio.to_thread(newcomer.start)
        assert not await on_duty(newcomer)
        standby.signal(signal.SIGTERM)
        drained = time.monotonic()
        while not await on_duty(newcomer):
            assert time.monotonic() - drained < 5.0, "the duty was not handed over within 5 s"
            await asyncio.sleep(0.05)
        print(f"alert duty handed over {time.monotonic() - drained:.2f} s after SIGTERM")
        assert await asyncio.to_thread(standby.wait, 15) == 0
        await source_state(bus, fourth, online=False)
        _, last = await alerts.wait_for("source_lost", fourth, RAISED, 5)
        assert last.instance == f"monitoring-{newcomer.http_port}"
        assert len(alerts.matching("source_lost", third, RAISED)) == 1
        await source_state(bus, third, online=True)
        _, cleared = await alerts.wait_for("source_lost", third, CLEARED, 5)
        assert cleared.id == later.id
        await source_state(bus, fourth, online=True)
        await alerts.wait_for("source_lost", fourth, CLEARED, 5)
        newcomer.signal(signal.SIGTERM)
        assert await asyncio.to_thread(newcomer.wait, 15) == 0
    finally:
        for r in replicas:
            r.stop()
        await bus.drain()
