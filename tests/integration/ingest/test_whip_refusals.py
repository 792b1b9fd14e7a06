"""Each bad WHIP request gets its status and reason, allocates nothing; ingest keeps serving."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from services.common import ice
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2, media_pb2
from services.ingest import sources
from services.ingest.webrtc_source import WhipSource
from services.station.testcard import TestCard
from services.station.tracks import CardVideoTrack, ToneAudioTrack
from tests.support.nats import NatsServer, free_udp_port
from tests.support.station import (
    add_station,
    collect,
    publishing,
    running_ingest,
    station_command,
    wait_online,
    whip_url,
)

pytestmark = pytest.mark.timeout(90)


async def make_offer(station: str) -> str:
    ice.configure(("127.0.0.1",))
    card = TestCard(station, station, 320, 180)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(CardVideoTrack(card, 25), direction="sendonly")
    pc.addTransceiver(ToneAudioTrack(card), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


async def post(
    http: aiohttp.ClientSession,
    url: str,
    body: bytes,
    token: str | None,
    ctype: str = "application/sdp",
) -> tuple[int, str, dict[str, str]]:
    headers = {"Content-Type": ctype}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.text(), dict(resp.headers)


async def test_bad_requests_are_refused_and_change_nothing(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, max_sessions=2) as ingest:
        token = await add_station(ingest, "rf-a", "甲台")
        other = await add_station(ingest, "rf-b", "乙台")
        third = await add_station(ingest, "rf-c", "丙台")
        offer = (await make_offer("rf-a")).encode()
        url = whip_url(ingest, "rf-a")
        async with aiohttp.ClientSession() as http:
            status, text, headers = await post(http, url, offer, None)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert (await post(http, url, offer, "wrong-token"))[0] == 401
            assert (await post(http, url, offer, other))[0] == 401  # another station's token
            # A station that does not exist: the same answer as a wrong token.
            status, text, _ = await post(http, whip_url(ingest, "nobody"), offer, token)
            assert status == 401 and "wrong" in text
            status, text, _ = await post(http, url, b"hello, not sdp", token)
            assert status == 400 and "not SDP" in text
            status, text, _ = await post(http, url, offer, token, ctype="text/plain")
            assert status == 400 and "Content-Type" in text
            status, text, _ = await post(http, url, b"v=0\r\nm=video x y\r\n", token)
            assert status == 400 and "SDP" in text
            status, text, _ = await post(http, url, b"v=0\r\n" + b"a=x\r\n" * 20000, token)
            assert status == 413
            recvonly = offer.replace(b"a=sendonly", b"a=recvonly")
            status, text, _ = await post(http, url, recvonly, token)
            assert status == 400 and "sendonly" in text
            # Nothing was allocated by any of those.
            assert ingest.whip.sessions == {} and ingest.sources.live == {}

            async with http.options(url) as resp:
                assert resp.status == 204
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                assert "POST" in resp.headers["Access-Control-Allow-Methods"]
                assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]

            async with publishing(ingest, "rf-a", token, mode="live", size=(320, 180)) as pub:
                await wait_online(ingest, "rf-a")
                location = pub.publisher.location
                assert location is not None and location.startswith(url + "/")
                # A second publisher for a live station: 409, and the first keeps going.
                status, text, _ = await post(http, url, offer, token)
                assert status == 409
                async with http.patch(
                    location, data=b"", headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    assert resp.status == 405 and "DELETE" in resp.headers["Allow"]
                async with http.delete(location, headers={"Authorization": "Bearer nope"}) as resp:
                    assert resp.status == 401
                async with http.delete(
                    url + "/no-such-session", headers={"Authorization": f"Bearer {token}"}
                ) as resp:
                    assert resp.status == 404
                # Over max_sessions (2): one more live station fits, the next gets 503.
                async with publishing(ingest, "rf-b", other, mode="live", size=(320, 180)):
                    await wait_online(ingest, "rf-b")
                    status, text, headers = await post(
                        http, whip_url(ingest, "rf-c"), (await make_offer("rf-c")).encode(), third
                    )
                    assert status == 503
                assert set(ingest.sources.live) <= {"rf-a", "rf-b"}
                # A plain HTTP client's view of a good exchange: 201, the answer, its Location.
                async with http.post(
                    whip_url(ingest, "rf-c"),
                    data=(await make_offer("rf-c")).encode(),
                    headers={"Authorization": f"Bearer {third}", "Content-Type": "application/sdp"},
                ) as resp:
                    assert resp.status == 201
                    assert resp.headers["Content-Type"] == "application/sdp"
                    assert resp.headers["Location"].startswith("/whip/rf-c/")
                    assert (await resp.text()).startswith("v=0")
                    session = resp.headers["Location"]
                assert "rf-c" in ingest.sources.live
                base = f"http://127.0.0.1:{ingest.http.port}"
                async with http.delete(
                    base + session, headers={"Authorization": f"Bearer {third}"}
                ) as resp:
                    assert resp.status == 200
                assert "rf-c" not in ingest.sources.live
                # Still serving: the first station's frames keep arriving.
                got = await collect(
                    ingest,
                    "source/rf-a",
                    media_pb2.Rendition(width=160, height=90, no_audio=True),
                    video=5,
                )
                assert len(got.video) >= 5 and got.video[0].width == 160
                assert pub.publisher.sessions == 1

            # A revoked station's token no longer works.
            await station_command(
                ingest, ingest_pb2.StationCommand(revoke=ingest_pb2.StationRef(id="rf-a"))
            )
            assert (await post(http, url, offer, token))[0] == 401
            async with http.get(f"http://127.0.0.1:{ingest.http.port}/readyz") as resp:
                assert resp.status == 200


async def test_a_station_revoked_elsewhere_is_taken_off_air(nats_server: NatsServer) -> None:
    """Another ingest instance may answer the revoke command: each ends its own sessions."""
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "rv", "撤台")
        async with publishing(ingest, "rv", token, mode="packets", size=(320, 180)):
            await wait_online(ingest, "rv")
            live = ingest.sources.live["rv"]
            kv = await ingest.bus.kv("stations", ingest_pb2.Station)

            def revoke(station: ingest_pb2.Station | None) -> ingest_pb2.Station:
                assert station is not None
                station.revoked = True
                return station

            await kv.update("rv", revoke)  # as another instance would, not through this one
            for _ in range(100):
                if "rv" not in ingest.sources.live:
                    break
                await asyncio.sleep(0.1)
            assert "rv" not in ingest.sources.live
            assert live.state.reason == "station revoked" and not live.state.online


async def test_an_offer_without_a_common_codec_is_refused(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, "cc", "无码台")
        offer = await make_offer("cc")
        for codec in ("VP8", "H264", "rtx"):
            offer = re.sub(rf"a=rtpmap:(\d+) {codec}/90000", r"a=rtpmap:\1 AV2/90000", offer)
        async with aiohttp.ClientSession() as http:
            status, text, _ = await post(http, whip_url(ingest, "cc"), offer.encode(), token)
        assert status == 400 and "VP8" in text
        assert ingest.whip.sessions == {} and ingest.sources.live == {}


async def test_a_full_rtc_port_range_answers_503_and_frees_everything(
    nats_server: NatsServer,
) -> None:
    port = free_udp_port()
    async with running_ingest(nats_server.url, rtc_port_min=port, rtc_port_max=port) as ingest:
        token = await add_station(ingest, "pr-a", "甲")
        other = await add_station(ingest, "pr-b", "乙")
        async with publishing(ingest, "pr-a", token, mode="packets", size=(320, 180)):
            await wait_online(ingest, "pr-a")
            live = ingest.sources.live["pr-a"]
            assert isinstance(live.source, WhipSource)
            assert f"127.0.0.1 {port} typ host" in live.source.pc.localDescription.sdp
            offer = (await make_offer("pr-b")).encode()
            async with aiohttp.ClientSession() as http:
                status, text, _ = await post(http, whip_url(ingest, "pr-b"), offer, other)
            assert status == 503 and "WebRTC" in text
            assert set(ingest.sources.live) == {"pr-a"} and len(ingest.whip.sessions) == 1
    ice.configure(("127.0.0.1",))


async def test_a_session_that_sends_nothing_gives_its_slot_back(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "NO_MEDIA_TIMEOUT_S", 0.5)
    async with running_ingest(nats_server.url, max_sessions=1) as ingest:
        token = await add_station(ingest, "nm", "无声台")
        states: list[control_pb2.SourceState] = []

        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            states.append(state)

        await ingest.bus.subscribe("baycast.v1.source.nm.state", control_pb2.SourceState, on_state)
        async with aiohttp.ClientSession() as http:
            # The offerer's peer is gone at once: ICE never completes, no frame ever arrives.
            status, _, _ = await post(
                http, whip_url(ingest, "nm"), (await make_offer("nm")).encode(), token
            )
            assert status == 201 and "nm" in ingest.sources.live
            for _ in range(150):  # 0.5 s timeout, plus room for a loaded machine
                if "nm" not in ingest.sources.live:
                    break
                await asyncio.sleep(0.1)
            assert "nm" not in ingest.sources.live and ingest.whip.sessions == {}
        for _ in range(50):
            if states:
                break
            await asyncio.sleep(0.1)
        assert [(s.online, s.reason) for s in states] == [(False, "no media within 0.5 s")]
