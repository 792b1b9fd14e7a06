"""A station is live once across all ingest instances on one NATS (services/ingest/live_claims.py):
a second contribution to another instance is refused (WHIP: 409) until the first ends, or until
the instance holding it dies and its claim lapses."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import pytest

from services.ingest.settings import DEFAULT_LIVE_CLAIM_TTL_S
from tests.integration.ingest.test_whip_refusals import make_offer, post
from tests.support.ffmpeg_push import ffmpeg_push, rtmp_url
from tests.support.nats import NatsServer
from tests.support.services import service_process
from tests.support.station import add_station, publishing, running_ingest, wait_online, whip_url

pytestmark = pytest.mark.timeout(120)


def elsewhere(station: str) -> str:
    return f"CONFLICT: station {station!r} is already live on another ingest instance"


async def test_a_station_live_on_one_instance_is_refused_by_another_until_it_ends(
    nats_server: NatsServer,
) -> None:
    station = "lo-a"
    async with running_ingest(nats_server.url) as a, running_ingest(nats_server.url) as b:
        token = await add_station(a, station, "独播台")
        offer = (await make_offer(station)).encode()
        async with aiohttp.ClientSession() as http:
            async with publishing(a, station, token, mode="packets", size=(320, 180)) as pub:
                await wait_online(a, station)
                status, text, _ = await post(http, whip_url(b, station), offer, token)
                assert (status, text.strip()) == (409, elsewhere(station))
                # Over RTMP, B refuses it the same way.
                push = await ffmpeg_push(rtmp_url(b.rtmp.port, "live", token), "flv", seconds=2)
                code, encoder_log = await push.finish()
                assert code != 0
                assert (
                    f"station {station} is already live on another ingest instance" in encoder_log
                )
                # B allocated nothing; A's contribution goes on.
                assert b.whip.sessions == {} and b.sources.live == {}
                assert a.sources.live[station].state.online and pub.publisher.sessions == 1
            # The publisher DELETEd its session on A: B takes the station at once.
            assert station not in a.sources.live
            status, _, headers = await post(http, whip_url(b, station), offer, token)
            assert status == 201 and station in b.sources.live
            # ...and A now refuses it, as B holds it.
            status, text, _ = await post(http, whip_url(a, station), offer, token)
            assert (status, text.strip()) == (409, elsewhere(station))
            session = f"http://127.0.0.1:{b.http.port}{headers['Location']}"
            async with http.delete(session, headers={"Authorization": f"Bearer {token}"}) as resp:
                assert resp.status == 200
            assert station not in b.sources.live


async def test_a_station_live_on_an_instance_that_dies_can_publish_elsewhere_once_it_lapses(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    dying = service_process(
        "ingest",
        nats_server.url,
        tmp_path,
        "ingest",
        env={"BAYCAST_INGEST_RTMP_ADDR": "127.0.0.1:0"},
    )
    station, loop = "lo-b", asyncio.get_running_loop()
    async with running_ingest(nats_server.url) as b:
        token = await add_station(b, station, "独播台")
        offer = (await make_offer(station)).encode()
        await asyncio.to_thread(dying.start)
        try:
            url = f"{dying.http}/whip/{station}"
            async with (
                aiohttp.ClientSession() as http,
                publishing(b, station, token, mode="packets", size=(320, 180), url=url) as pub,
            ):
                deadline = loop.time() + 30.0
                while pub.publisher.sessions < 1:
                    assert loop.time() < deadline, f"never on air:\n{dying.logs()[-3000:]}"
                    await asyncio.sleep(0.1)
                status, text, _ = await post(http, whip_url(b, station), offer, token)
                assert (status, text.strip()) == (409, elsewhere(station))

                dying.signal(signal.SIGKILL)  # no release: the claim must lapse on its own
                await asyncio.to_thread(dying.wait, 10)
                killed = loop.time()
                while True:
                    status, text, headers = await post(http, whip_url(b, station), offer, token)
                    if status != 409:
                        break
                    assert loop.time() - killed < DEFAULT_LIVE_CLAIM_TTL_S + 4.0, text
                    await asyncio.sleep(0.5)  # WHIP's rate limit allows 5 offers a second
                assert status == 201 and station in b.sources.live
                assert loop.time() - killed <= DEFAULT_LIVE_CLAIM_TTL_S + 4.0
                pub.stop.set()  # it would publish again to the dead instance
                session = f"http://127.0.0.1:{b.http.port}{headers['Location']}"
                async with http.delete(
                    session, headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    assert resp.status == 200
        finally:
            dying.stop()
