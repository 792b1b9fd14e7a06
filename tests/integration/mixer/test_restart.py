"""Kill the mixer process and start it again: state and output are back within 5 s. Two
instances share productions without running one twice."""

from __future__ import annotations

import asyncio
import signal
import time

from prometheus_client import REGISTRY

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from tests.integration.mixer.conftest import CreateProduction
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import (
    admin,
    cards,
    close_to,
    command,
    next_video,
    production,
    unique,
    yuv_at,
)
from tests.support.nats import NatsServer
from tests.support.services import running_service, service_process

Cmd = mixer_pb2.MixerCommand
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)
FAST_LEASES = {
    "BAYCAST_MIXER_LEASE_SECONDS": "2",
    "BAYCAST_MIXER_LEASE_RENEW_SECONDS": "0.3",
    "BAYCAST_UNREADY_SECONDS": "0",
}


async def test_killed_mixer_resumes_state_and_output_within_5_s(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    nats_server: NatsServer,
    tmp_path,
    create_production: CreateProduction,
) -> None:
    prod_id = unique("restart")
    a, b, c = (media.add(card) for card in cards(prod_id, 3))
    await announce()
    ids = [card.name.removeprefix("source/") for card in (a, b, c)]
    proc = service_process("mixer", nats_server.url, tmp_path, "mixer", env=FAST_LEASES)
    await asyncio.to_thread(proc.start)
    try:
        await create_production(production(prod_id, [a, b, c]))
        await command(bus, prod_id, Cmd(preview=Cmd.Preview(source=ids[2])))
        await command(bus, prod_id, Cmd(take=Cmd.Take()))
        pip = Cmd.SetLayout(layout=mixer_pb2.Layout(name="pip", kind="pip", sources=["", ids[1]]))
        await command(bus, prod_id, Cmd(layout=pip))
        before = await command(bus, prod_id, Cmd(audio=Cmd.Audio(source=ids[1], gain_db=-9)))
        endpoint = f"127.0.0.1:{proc.grpc_port}"
        handle = f"prod/{prod_id}/program"

        def looks_right(image) -> bool:
            # c full screen, b in the inset at the top right
            return close_to(yuv_at(image, 40, 140), c.yuv) and close_to(
                yuv_at(image, 260, 40), b.yuv
            )

        await next_video(endpoint, handle, SMALL, accept=looks_right)

        proc.signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 5)
        started = time.monotonic()
        await asyncio.to_thread(proc.start)
        after = await command(bus, prod_id, Cmd(get=Cmd.Get()), retry_for=5)
        await next_video(endpoint, handle, SMALL, accept=looks_right, timeout=5)
        elapsed = time.monotonic() - started
        assert elapsed < 5.0, elapsed
        assert after.switcher.program == ids[2] and after.switcher.preview == ids[0]
        assert after.switcher.layout == before.switcher.layout
        assert list(after.switcher.audio) == list(before.switcher.audio)
    finally:
        await asyncio.to_thread(proc.stop)


async def test_two_instances_never_run_the_same_production(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    nats_server: NatsServer,
    create_production: CreateProduction,
) -> None:
    card_list = [media.add(card) for card in cards(unique("pair"), 1)]
    await announce()
    fast = {
        "lease_seconds": 1.5,
        "lease_renew_seconds": 0.2,
        "unready_seconds": 0.0,
        "max_productions": 8,
    }
    async with running_service(MixerService, MixerSettings, nats_server.url, **fast) as one:
        async with running_service(MixerService, MixerSettings, nats_server.url, **fast) as two:
            prods = [unique("pair") for _ in range(4)]
            for prod_id in prods:
                await create_production(production(prod_id, card_list))
            await asyncio.sleep(0.6)
            owned_one, owned_two = set(one.running) & set(prods), set(two.running) & set(prods)
            assert owned_one | owned_two == set(prods) and not owned_one & owned_two
            listing = await admin(
                bus, mixer_pb2.ProductionCommand(list=mixer_pb2.ProductionCommand.List())
            )
            for prod_id in prods:
                owner = listing.owners[prod_id]
                assert owner == (one if prod_id in owned_one else two).settings.instance
        # `two` stopped: its productions move to `one` once their leases expire.
        for _ in range(40):
            if set(prods) <= set(one.running):
                break
            await asyncio.sleep(0.1)
        assert set(prods) <= set(one.running)


async def test_a_replica_takes_no_more_than_its_cpu_budget(own_nats_server: NatsServer) -> None:
    """A mixer whose CPU (0.4 core) holds one production (0.35 core each) runs one; another
    instance runs the rest; its units_available gauge says it is full."""
    bus = Bus(own_nats_server.url, "budget-test")
    await bus.connect()
    fast = {"lease_seconds": 1.5, "lease_renew_seconds": 0.2, "unready_seconds": 0.0}
    try:
        async with running_service(
            MixerService,
            MixerSettings,
            own_nats_server.url,
            capacity_cores=0.4,
            unit_cores=0.35,
            instance="small",
            **fast,
        ) as small:
            prods = [unique("budget") for _ in range(3)]
            for prod_id in prods:
                await admin(
                    bus, mixer_pb2.ProductionCommand(create=mixer_pb2.Production(id=prod_id))
                )
            for _ in range(50):
                if small.running:
                    break
                await asyncio.sleep(0.1)
            async with running_service(
                MixerService, MixerSettings, own_nats_server.url, instance="big", **fast
            ) as big:
                for _ in range(50):
                    if len(big.running) == 2:
                        break
                    await asyncio.sleep(0.1)
                assert len(small.running) == 1 and set(small.running) | set(big.running) == set(
                    prods
                )
                assert small.budget is not None and small.budget.available == 0
                assert REGISTRY.get_sample_value("baycast_mixer_units_available") == 0
                assert big.budget is None  # no CPU limit of its own: only max_productions
    finally:
        await bus.drain()
