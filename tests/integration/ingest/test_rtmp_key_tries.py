"""Stream-key tries over RTMP are rate-limited per client address and in all: a try past either
bucket is answered exactly as a wrong key (even with the right key) and reads nothing from the
stations bucket, as the JetStream API requests seen on the bus show."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from tests.integration.ingest.rtmp_client import try_key
from tests.reliability.proc_stats import metric_value
from tests.support.nats import NatsServer
from tests.support.station import add_station, running_ingest

pytestmark = pytest.mark.timeout(60)

STATION = "kt-gz"
SENTINEL = "rtmp-key-tries.sentinel"


class StationReads:
    """Every message on the bus, counting JetStream API requests on the stations bucket."""

    def __init__(self, nc: Any) -> None:
        self.nc = nc
        self.count = 0
        self._marks: dict[str, asyncio.Event] = {}
        self._serial = itertools.count()

    async def on_message(self, msg: Any) -> None:
        if msg.subject.startswith("$JS.API.") and "KV_stations" in msg.subject:
            self.count += 1
        elif msg.subject.startswith(SENTINEL):
            self._marks[msg.subject].set()

    async def now(self) -> int:
        """The count once every request published before this call has been seen: a sentinel
        of ours comes back through the same subscription after them."""
        mark = f"{SENTINEL}.{next(self._serial)}"
        self._marks[mark] = asyncio.Event()
        await self.nc.publish(mark, b"")
        await asyncio.wait_for(self._marks[mark].wait(), 5)
        return self.count


async def refused(http: str, reason: str) -> float:
    """ingest's count of RTMP refusals for `reason`, from its /metrics (served by this loop)."""
    return await asyncio.to_thread(metric_value, http, "baycast_ingest_rtmp_refused_total", reason)


@pytest.fixture
async def station_reads(nats_server: NatsServer) -> AsyncIterator[StationReads]:
    nc = await nats.connect(nats_server.url)
    reads = StationReads(nc)
    await nc.subscribe(">", cb=reads.on_message)
    await nc.flush()
    yield reads
    await nc.drain()


async def test_key_tries_past_the_rate_answer_as_a_wrong_key_and_read_nothing(
    nats_server: NatsServer, station_reads: StationReads
) -> None:
    async with running_ingest(
        nats_server.url,
        # Two tries per address and four in all, refilled only after minutes.
        rtmp_key_rate_per_s=0.01,
        rtmp_key_rate_burst=2,
        rtmp_key_rate_total_per_s=0.01,
        rtmp_key_rate_total_burst=4,
    ) as ingest:
        token = await add_station(ingest, STATION, "广州台")
        wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        port = ingest.rtmp.port
        metrics = f"http://127.0.0.1:{ingest.http.port}"
        # The counters are the process's: other tests in it may have counted refusals before.
        counted = {
            reason: await refused(metrics, reason)
            for reason in ("key", "key_rate_address", "key_rate_total")
        }

        async def attempt(app: str, key: str, host: str) -> tuple[dict[str, Any], int]:
            before = await station_reads.now()
            info = await try_key(port, app, key, host)
            return info, await station_reads.now() - before

        # Within both buckets: a wrong key is looked up (the whole bucket under `live/`).
        wrong_live, reads_live = await attempt("live", wrong, "127.0.0.1")
        wrong_station, reads_station = await attempt(STATION, wrong, "127.0.0.1")
        # The third try of 127.0.0.1, with the right key: over its address's rate.
        over_address, reads_over_address = await attempt("live", token, "127.0.0.1")
        limited_address = await refused(metrics, "key_rate_address") - counted["key_rate_address"]
        # 127.0.0.2 uses the last two of everyone's four; 127.0.0.3's first try is over.
        for _ in range(2):
            await attempt("live", wrong, "127.0.0.2")
        over_total, reads_over_total = await attempt(STATION, token, "127.0.0.3")
        limited_total = await refused(metrics, "key_rate_total") - counted["key_rate_total"]
        wrong_keys = await refused(metrics, "key") - counted["key"]
        live = dict(ingest.sources.live)

    print(
        f"\nkey tries: wrong key under live/ read {reads_live} stations-bucket requests, under"
        f" the station {reads_station}; over the address's rate {reads_over_address}, over the"
        f" total rate {reads_over_total}"
    )
    assert wrong_live["code"] == "NetStream.Publish.BadName"
    assert wrong_live["description"] == "unknown, wrong or revoked stream key"
    assert reads_live >= 3 and reads_station >= 1  # bucket status, keys and values; one get
    # Over a rate: the answer of a wrong key, word for word, and no read at all.
    for answer in (wrong_station, over_address, over_total):
        assert answer == wrong_live
    assert reads_over_address == 0 and reads_over_total == 0
    assert limited_address == 1 and limited_total == 1
    assert wrong_keys == 4
    assert live == {}
