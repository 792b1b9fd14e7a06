"""SIGTERM drains without losing acknowledged commands; a NATS restart is survived."""

from __future__ import annotations

import asyncio
import signal
import time

from services.common.bus import Bus, subject
from services.common.errors import BaycastError
from services.common.gen.baycast.v1 import control_pb2
from tests.support.nats import NatsServer
from tests.support.probe_service import ProbeService, ProbeSettings
from tests.support.services import http_get_json, running_service, service_process


async def test_sigterm_turns_unready_drains_and_loses_nothing(
    nats_server: NatsServer, tmp_path
) -> None:
    probe = service_process(
        "tests.support.probe_service",
        nats_server.url,
        tmp_path,
        "probe",
        env={"BAYCAST_PROBE_DRAIN_SECONDS": "8", "BAYCAST_PROBE_UNREADY_SECONDS": "1"},
    ).start()
    instance = probe.env["BAYCAST_PROBE_INSTANCE"]
    client = Bus(nats_server.url, "sigterm-client")
    await client.connect()
    acked: list[str] = []
    stop = asyncio.Event()

    async def send_commands() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            key = f"k{n}"
            try:
                await client.request(
                    subject("probe", instance, "put"),
                    control_pb2.SourceState(source=key),
                    control_pb2.SourceState,
                    timeout=1,
                )
                acked.append(key)
            except BaycastError:
                await asyncio.sleep(0.01)

    sender = asyncio.create_task(send_commands())
    try:
        await asyncio.sleep(0.5)
        probe.signal(signal.SIGTERM)
        signalled = time.monotonic()
        saw_unready = False
        while (
            probe.proc is not None
            and probe.proc.poll() is None
            and time.monotonic() - signalled < 10
        ):
            try:
                status, body = await asyncio.to_thread(http_get_json, probe.http + "/readyz", 0.5)
                if status == 503:
                    saw_unready = True
                    assert body["ready"] is False
            except OSError:
                pass
            await asyncio.sleep(0.05)
        code = await asyncio.to_thread(probe.wait, 10)
        elapsed = time.monotonic() - signalled
        stop.set()
        await sender
        print(f"sigterm: exit {code} after {elapsed:.2f} s, {len(acked)} commands acknowledged")
        assert saw_unready, "readiness never went false before exit"
        assert code == 0
        assert elapsed < 8

        bucket = await client.kv("probe", control_pb2.SourceState)
        stored = set(await bucket.keys())
        missing = [k for k in acked if k not in stored]
        assert len(acked) > 10
        assert missing == []
    finally:
        stop.set()
        await asyncio.gather(sender, return_exceptions=True)
        await client.drain()
        probe.stop()


async def test_service_rejoins_a_restarted_nats_server(own_nats_server: NatsServer) -> None:
    async with running_service(
        ProbeService, ProbeSettings, own_nats_server.url, instance="restart-test"
    ) as svc:
        client = Bus(own_nats_server.url, "restart-client")
        await client.connect()
        subj = subject("probe", "restart-test", "put")
        try:
            await client.request(
                subj, control_pb2.SourceState(source="before"), control_pb2.SourceState
            )
            own_nats_server.kill()
            await asyncio.sleep(0.5)
            assert not svc.bus.connected
            status, _ = await asyncio.to_thread(
                http_get_json, f"http://127.0.0.1:{svc.http.port}/readyz"
            )
            assert status == 503
            own_nats_server.start()
            started = time.monotonic()
            reply = None
            while time.monotonic() - started < 10:
                try:
                    reply = await client.request(
                        subj,
                        control_pb2.SourceState(source="after"),
                        control_pb2.SourceState,
                        timeout=1,
                    )
                    break
                except BaycastError:
                    await asyncio.sleep(0.1)
            took = time.monotonic() - started
            print(f"nats restart: commands served again after {took:.2f} s")
            assert reply is not None and reply.source == "after"
            assert svc.bus.connected
            assert took < 5
            entry = await svc.records.get("after")
            assert entry is not None
        finally:
            await client.drain()
