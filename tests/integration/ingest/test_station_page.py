"""The station's page: its configuration and policy, and a real browser using the whole exchange
(return over WHEP, tally, cues, talkback) against real ingest, mixer and distribution."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from services.common.gen.baycast.v1 import ingest_pb2
from services.ingest.reporter import ASSETS
from tests.support.loopback_scene import run_scene, unshare_works
from tests.support.nats import NatsServer
from tests.support.station import add_station, running_ingest, station_command

pytestmark = pytest.mark.timeout(180)

EXCHANGE = "https://Exchange.Example.org:8443/"


async def test_config_and_policy_name_the_exchange(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, exchange_url=EXCHANGE) as ingest:
        token = await add_station(ingest, "page-zh", "珠海台")
        base = f"http://127.0.0.1:{ingest.http.port}"
        auth = {"Authorization": f"Bearer {token}"}
        async with aiohttp.ClientSession() as http:
            for path in ("/station/page-zh", "/contribute/page-zh"):
                async with http.get(base + path) as resp:
                    page = await resp.text()
                    assert resp.status == 200 and resp.content_type == "text/html"
                    csp = resp.headers["Content-Security-Policy"]
                    assert resp.headers["Referrer-Policy"] == "no-referrer"
                    assert resp.headers["X-Content-Type-Options"] == "nosniff"
                    assert resp.headers["Cache-Control"] == "no-store"
                    assert resp.headers["Permissions-Policy"] == "camera=(self), microphone=(self)"
                directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
                # Exactly this origin and the exchange's (lower-cased, no path) for requests
                # and media; scripts and styles from this origin only, nothing inline.
                origin = "https://exchange.example.org:8443"
                assert directives["connect-src"] == f"'self' {origin}"
                assert directives["media-src"] == f"'self' {origin} blob: mediastream:"
                assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
                assert directives["default-src"] == "'none'"
                assert directives["frame-ancestors"] == "'none'"
            assert '<script type="module" src="/contribute/assets/station.js">' in page
            assert "<style" not in page and "style=" not in page and "onclick" not in page
            for name in ("station-name", "return", "feed", "volume", "tally-frame", "cue-list"):
                assert f'id="{name}"' in page

            async with http.get(f"{base}/station/page-zh/config.json", headers=auth) as resp:
                assert resp.status == 200 and resp.content_type == "application/json"
                assert await resp.json() == {
                    "station": "page-zh",
                    "name": "珠海台",
                    "whip_url": f"{base}/whip/page-zh",
                    "exchange_url": EXCHANGE.rstrip("/"),
                }
            for name, kind in ASSETS.items():
                async with http.get(f"{base}/contribute/assets/{name}") as resp:
                    assert resp.status == 200 and resp.content_type == kind, name
            async with http.get(f"{base}/contribute/assets/station.js") as resp:
                script = await resp.text()
            assert "config.json" in script and "/exchange/" in script
            # Without the station's token: the same for every station id, existing or not
            # (test_station_routes.py); an id no station can have is not found.
            async with http.get(f"{base}/station/nope/config.json") as resp:
                assert resp.status == 200 and "name" not in await resp.json()
            async with http.get(f"{base}/station/NOT_AN_ID/config.json") as resp:
                assert resp.status == 404

            await station_command(
                ingest, ingest_pb2.StationCommand(revoke=ingest_pb2.StationRef(id="page-zh"))
            )
            async with http.get(f"{base}/station/page-zh/config.json", headers=auth) as resp:
                assert resp.status == 200 and "name" not in await resp.json()


async def test_same_origin_exchange_keeps_the_policy_to_self(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url) as ingest:
        await add_station(ingest, "page-zs", "中山台")
        base = f"http://127.0.0.1:{ingest.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/station/page-zs") as resp:
                csp = resp.headers["Content-Security-Policy"]
            async with http.get(f"{base}/station/page-zs/config.json") as resp:
                config = await resp.json()
        assert "connect-src 'self';" in csp and "media-src 'self' blob: mediastream:;" in csp
        assert config["exchange_url"] == ""


def close(rgb: list[int], expected: list[int], tolerance: int = 20) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(rgb, expected, strict=True))


async def test_headless_chromium_on_the_station_page(tmp_path: Path) -> None:
    """Station gz's page in Chromium: the return plays (gz's mix-minus: sz's tone, never gz's
    own; the talkback on top while the director talks), the tally frame follows cuts, a cue
    shows with its countdown and its OK reaches the director.

    Everything runs in a loopback-only network namespace (`tests/support/station_page_browser.py`
    says why and what it does); this test checks what it saw.
    """
    if not unshare_works():
        pytest.skip("needs `unshare -n` (root or user namespaces) for a loopback-only browser")
    out = tmp_path / "station_page.json"
    done, seen = await run_scene("tests.support.station_page_browser", out, timeout=150)
    assert done.returncode == 0 and "error" not in seen, (
        seen.get("error"),
        done.stderr.decode(errors="replace")[-3000:],
    )
    # The token came in the fragment and left the address bar; the config named the station.
    assert "#token" not in seen["url_after_load"]
    assert seen["station_name"] == "广州台"
    # The page's own SSE parser: same events however the stream is cut.
    for result in seen["sse_parser"]:
        assert result["retry"] == 2000
        assert result["events"] == [
            {"type": "tally", "data": '{"a":\n1}', "lastEventId": ""},
            {"type": "message", "data": "x\ny", "lastEventId": ""},
            {"type": "message", "data": "", "lastEventId": "9"},
        ], result["size"]

    # Feeds from hello: its return first, then what the policy lets it take.
    assert seen["feeds"] == [
        "启航·大湾区 返送 Return",
        "节目 Program",
        "净信号 Clean",
        "多画面 Multiview",
        "深圳台",
    ]
    assert seen["return_size"] == [640, 360]  # a return is 360p unless the station asks more
    assert seen["playing_muted"][0] is True  # playing
    assert seen["after_tap"] == [False, True]  # sound on, no unmute button left

    # The return's picture follows the program: sz's card, then gz's after the cut.
    expected = seen["expected"]
    assert close(seen["pixel_sz"], expected["sz"]), (seen["pixel_sz"], expected)
    assert close(seen["pixel_gz"], expected["gz"]), (seen["pixel_gz"], expected)

    # Its sound is gz's mix-minus: sz's tone, gz's own absent.
    tones = seen["audio_sz_on_air"]
    assert abs(tones["loudest_hz"] - seen["tones"]["sz"]) < 10
    assert tones["levels"][1] > -50 and tones["levels"][0] < tones["levels"][1] - 40

    # Tally: nothing while off, red on program, green on preview; shown within 100 ms of the
    # event (to the frame that paints it), and well within a second of the switcher command.
    for state in ("off", "cut_away"):
        assert seen[state]["width"] == "0px" and seen[state]["label"] == ""
    program = seen["program"]
    assert program["border"] == "rgb(230, 0, 0)" and program["width"] == "14px"
    assert program["label"] == "ON AIR 直播中"
    assert program["render_ms"] < 100
    assert program["command_to_render_ms"] < 1000
    assert seen["cut_away"]["render_ms"] < 100
    preview = seen["preview"]
    assert preview["border"] == "rgb(0, 176, 80)" and preview["label"] == "PREVIEW 预监"
    assert preview["render_ms"] < 100

    # The cue: its text, a countdown that runs, the OK (by keyboard) reaches the director.
    assert seen["cue_text"] == "30 秒后上场 / 30 s to air" and seen["cues_visible"]
    countdowns = seen["cue_countdowns"]
    assert countdowns[0] in ("0:30", "0:29") and countdowns == sorted(countdowns, reverse=True)
    assert len(set(countdowns)) == 3
    assert seen["cue_ack"]["by"] == "page" and seen["cue_ack"]["after_send_s"] > 0
    assert seen["cue_button_after_ack"] == "✓ 已收到 Acknowledged"
    assert seen["cues_hidden_after_clear"] is True

    # Talkback: the indicator while the director talks, and the voice in the return (sz's
    # program sound ducked by 15 dB under it); gone when the talk ends.
    assert seen["talkback_before"] is True
    assert seen["talkback_text"] == "导演讲话 Director talking"
    talking, after = seen["audio_talking"], seen["audio_after_talk"]
    assert abs(talking["loudest_hz"] - seen["tones"]["talk"]) < 10
    assert talking["levels"][1] < after["levels"][1] - 10  # the program ducked
    assert after["levels"][2] < talking["levels"][2] - 40  # the voice gone
    assert abs(after["loudest_hz"] - seen["tones"]["sz"]) < 10

    # Dropped by the server, the return and the event stream come back by themselves.
    assert seen["return_back_after_s"] < 8  # the DTLS close, not ICE timeouts
    assert close(seen["pixel_after_reconnect"], expected["sz"])
    assert seen["events_back_after_s"] < 10
    assert seen["program_after_reconnect"]["label"] == "ON AIR 直播中"

    # Clean picture: a new WHEP session replaces the old one; Stop DELETEs it.
    assert seen["clean_feed"].endswith("/whep/bay/return/gz?picture=clean")
    assert close(seen["pixel_clean"], expected["sz"])
    assert [v[:3] for v in seen["viewers_clean"]] == [["return/gz", "station:gz", "connected"]]
    assert seen["viewers_stopped"] == []
