"""Live claims against a real nats-server: one instance at a time holds a source, a dead
instance's claims lapse, and an unreachable bucket never stops a contribution."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY

from services.common.bus import Bus
from services.common.gen.baycast.v1 import control_pb2
from services.ingest.live_claims import BUCKET, CALL_TIMEOUT_S, Claim, LiveClaims
from tests.support.nats import NatsServer

pytestmark = pytest.mark.timeout(60)

UNCHECKED = "baycast_ingest_live_claims_unchecked_total"


@contextlib.asynccontextmanager
async def instance(
    url: str, name: str, *, ttl_s: float = 6.0, refresh_s: float = 2.0, refreshing: bool = False
) -> AsyncIterator[LiveClaims]:
    """The claims of one ingest instance on its own connection; `refreshing` runs its refresh."""
    bus = Bus(url, f"ingest-{name}")
    await bus.connect()
    claims = LiveClaims(bus, name, ttl_s=ttl_s, refresh_s=refresh_s)
    await claims.open()
    task = asyncio.create_task(claims.run()) if refreshing else None
    try:
        yield claims
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await bus.drain()


async def owner_of(claims: LiveClaims, source: str) -> str:
    entry = await (await claims.bus.kv(BUCKET, control_pb2.Lease)).get(source)
    return entry.value.owner if entry is not None else ""


async def test_a_source_is_claimed_by_one_instance_at_a_time(
    own_nats_server: NatsServer,
) -> None:
    url = own_nats_server.url
    async with instance(url, "a") as a, instance(url, "b") as b:
        assert await a.claim("gz") is Claim.TAKEN
        assert await owner_of(a, "gz") == "a"
        assert await a.claim("gz") is Claim.LIVE_HERE  # another protocol, same instance
        assert await b.claim("gz") is Claim.LIVE_ELSEWHERE
        assert "gz" not in b.held and await owner_of(b, "gz") == "a"
        # Two admissions racing on one instance: exactly one gets the claim.
        outcomes = await asyncio.gather(a.claim("sz"), a.claim("sz"))
        assert sorted(o.value for o in outcomes) == sorted(
            [Claim.TAKEN.value, Claim.LIVE_HERE.value]
        )

        await a.release("gz")
        assert "gz" not in a.held and await owner_of(b, "gz") == ""
        assert await b.claim("gz") is Claim.TAKEN
        assert await a.claim("gz") is Claim.LIVE_ELSEWHERE
        await b.release("gz")
        await a.release("gz")  # not held: nothing happens
        assert await owner_of(a, "gz") == ""


async def test_a_claim_of_this_instance_from_a_past_life_is_taken_back(
    own_nats_server: NatsServer,
) -> None:
    url = own_nats_server.url
    async with instance(url, "a") as before:
        assert await before.claim("fs") is Claim.TAKEN
    # The same instance name, restarted in place before the claim lapsed.
    async with instance(url, "a") as after, instance(url, "b") as other:
        assert await other.claim("fs") is Claim.LIVE_ELSEWHERE
        assert await after.claim("fs") is Claim.TAKEN
        assert await other.claim("fs") is Claim.LIVE_ELSEWHERE


async def test_refreshed_claims_hold_and_a_dead_instance_s_lapse(
    own_nats_server: NatsServer,
) -> None:
    url, ttl_s = own_nats_server.url, 1.5
    loop = asyncio.get_running_loop()
    async with instance(url, "b", ttl_s=ttl_s, refresh_s=0.5) as b:
        async with instance(url, "a", ttl_s=ttl_s, refresh_s=0.5, refreshing=True) as a:
            assert await a.claim("zh") is Claim.TAKEN
            # Held across more than twice the claim's lifetime, checked all along.
            until = loop.time() + 2 * ttl_s + 0.5
            while loop.time() < until:
                assert await b.claim("zh") is Claim.LIVE_ELSEWHERE
                await asyncio.sleep(0.2)
            a.held.clear()  # as if the process died: no release, no more refreshes
        died = loop.time()
        while await b.claim("zh") is not Claim.TAKEN:
            assert loop.time() - died < ttl_s + 2.0, "the dead instance's claim did not lapse"
            await asyncio.sleep(0.1)
        assert await owner_of(b, "zh") == "b"


async def test_an_unreachable_bucket_admits_on_this_instance_s_check_alone(
    own_nats_server: NatsServer,
) -> None:
    url = own_nats_server.url
    loop = asyncio.get_running_loop()
    unchecked = REGISTRY.get_sample_value(UNCHECKED) or 0.0
    async with instance(url, "a", refresh_s=0.5, refreshing=True) as a:
        own_nats_server.freeze()  # connected, but nothing answers
        try:
            started = loop.time()
            assert await a.claim("hz") is Claim.TAKEN
            assert loop.time() - started < CALL_TIMEOUT_S + 1.5
            assert await a.claim("hz") is Claim.LIVE_HERE  # this instance's own check holds
        finally:
            own_nats_server.thaw()
        assert REGISTRY.get_sample_value(UNCHECKED) == unchecked + 1
        # Once the bucket answers again, a refresh writes the claim into it.
        deadline = loop.time() + 15.0
        while a.held["hz"].revision == 0 or await owner_of(a, "hz") != "a":
            assert loop.time() < deadline, "the claim never reached the bucket"
            await asyncio.sleep(0.1)
        async with instance(url, "b") as b:
            assert await b.claim("hz") is Claim.LIVE_ELSEWHERE
