"""Fault 4: nats-server frozen (SIGSTOP) for 30 s.

The TCP connections stay open but nothing answers: only the client's pings find out. Each
service must notice within 20 s (readiness false, `nats_disconnected` in its log), the program
must keep flowing on the media plane at full rate, and all must be ready again after SIGCONT.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.handles import HandleDirectory
from tests.reliability.helpers import (
    create_production,
    graphics_process,
    ingest_process,
    mixer_process,
    processes,
    recording,
    wait_for,
)
from tests.support.media_source import Card, FakeMediaServer
from tests.support.nats import NatsServer

pytestmark = pytest.mark.timeout(150)

FREEZE_S = 30.0
NOTICE_TARGET_S = 20.0
FPS = 25


async def test_frozen_nats_is_noticed_media_flows_and_services_recover(
    own_nats_server: NatsServer, media: FakeMediaServer, tmp_path
) -> None:
    nats = own_nats_server
    tag = uuid.uuid4().hex[:5]
    prod_id, a = f"nf-{tag}", f"nf-a-{tag}"
    media.add(Card(f"source/{a}", (81, 90, 240)))
    services = {
        "ingest": ingest_process(nats.url, tmp_path),
        "mixer": mixer_process(nats.url, tmp_path),
        "graphics": graphics_process(nats.url, tmp_path),
    }
    bus = Bus(nats.url, "nats-freeze-test")
    await bus.connect()
    noticed: dict[str, float] = {}
    recovered: dict[str, float] = {}
    with processes(*services.values()):
        await media.announce(HandleDirectory(bus))
        await create_production(
            bus,
            mixer_pb2.Production(
                id=prod_id,
                name="冻结",
                width=1280,
                height=720,
                sources=[mixer_pb2.ProductionSource(id=a, name="广州台")],
            ),
        )
        await bus.drain()
        endpoint = f"127.0.0.1:{services['mixer'].grpc_port}"
        async with recording(endpoint, f"prod/{prod_id}/program") as rec:
            await asyncio.sleep(1.0)
            nats.freeze()
            frozen_at = time.monotonic()
            try:
                while time.monotonic() - frozen_at < FREEZE_S:
                    for name, proc in services.items():
                        if name not in noticed and not await asyncio.to_thread(proc.ready):
                            noticed[name] = time.monotonic() - frozen_at
                    await asyncio.sleep(0.25)
            finally:
                nats.thaw()
            thawed_at = time.monotonic()
            during = [f for f in rec.frames if frozen_at <= f.at <= thawed_at]

            async def until_ready(name: str) -> None:
                proc = services[name]
                await wait_for(lambda: proc.ready(), 30, f"{name} ready again", every=0.1)
                recovered[name] = time.monotonic() - thawed_at

            await asyncio.gather(*(until_ready(n) for n in services))
        logs = {name: proc.logs() for name, proc in services.items()}

    expected = (thawed_at - frozen_at) * FPS
    print(
        f"\nfault 4: frozen {thawed_at - frozen_at:.1f} s; noticed after "
        + ", ".join(f"{n} {t:.1f} s" for n, t in sorted(noticed.items()))
        + f"; program frames during the freeze {len(during)} of {expected:.0f}"
        f" (pts steps {sorted(rec.pts_steps())} us, longest arrival gap"
        f" {rec.longest_arrival_gap() * 1000:.0f} ms); ready again after SIGCONT: "
        + ", ".join(f"{n} {t:.2f} s" for n, t in sorted(recovered.items()))
    )
    assert set(noticed) == set(services), noticed
    assert max(noticed.values()) <= NOTICE_TARGET_S, noticed
    for name, text in logs.items():
        assert "nats_disconnected" in text, name
    assert len(during) >= 0.95 * expected, (len(during), expected)
    assert rec.pts_steps() == {1_000_000 // FPS}
