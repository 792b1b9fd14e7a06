"""The reporter page: served alike for every station id, and a real browser goes live with it."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from services.common.gen.baycast.v1 import ingest_pb2
from tests.support.loopback_scene import run_scene, unshare_works
from tests.support.nats import NatsServer
from tests.support.station import add_station, running_ingest, station_command

pytestmark = pytest.mark.timeout(180)


async def test_page_and_assets_are_served(nats_server: NatsServer) -> None:
    async with running_ingest(nats_server.url, rtmp_addr="127.0.0.1:0") as ingest:
        await add_station(ingest, "rep-sz", "深圳记者")
        base = f"http://127.0.0.1:{ingest.http.port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/contribute/rep-sz") as resp:
                page = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/html"
                csp = resp.headers["Content-Security-Policy"]
                assert "script-src 'self'" in csp and "connect-src 'self'" in csp
                assert resp.headers["Referrer-Policy"] == "no-referrer"
            assert '<script src="/contribute/assets/reporter.js">' in page
            assert 'id="go"' in page and 'id="stop"' in page and 'id="preview"' in page
            async with http.get(f"{base}/contribute/assets/reporter.js") as resp:
                script = await resp.text()
                assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "/whip/" in script and "Bearer" in script
            async with http.get(f"{base}/contribute/assets/reporter.css") as resp:
                assert resp.status == 200 and resp.content_type == "text/css"
            for path in (
                "/contribute/NOT_AN_ID",
                "/contribute/assets/service.py",
                "/contribute/assets/..%2Fsrt.py",
            ):
                async with http.get(base + path) as resp:
                    assert resp.status == 404, path
            # The page answers CORS preflights for WHIP from the same origin's script too.
            async with http.options(f"{base}/whip/rep-sz") as resp:
                assert resp.status == 204
                assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]
            # The page is the same for every station id, existing, revoked or not (so it tells
            # no one which exist: test_station_routes.py); going live takes the token.
            await station_command(
                ingest, ingest_pb2.StationCommand(revoke=ingest_pb2.StationRef(id="rep-sz"))
            )
            for path in ("/contribute/rep-sz", "/contribute/nope"):
                async with http.get(base + path) as resp:
                    assert resp.status == 200 and await resp.text() == page


async def test_headless_chromium_goes_live_from_the_reporter_page(tmp_path: Path) -> None:
    """Chromium (fake camera and microphone) opens the page, goes live over WHIP, stops.

    Where the packets go: the browser must not reach any interface but loopback, so the whole
    scene runs in a network namespace of its own (`unshare -n`) whose only interface is its own
    loopback: a nats-server, the ingest service (ICE on 127.0.0.1), Chromium under Playwright and
    the gRPC subscriber, all in `tests/support/reporter_browser.py`. The host's loopback is not
    reachable from in there, which is why the server side is inside too. This test reads what the
    driver saw (a JSON file) and checks the values.
    """
    if not unshare_works():
        pytest.skip("needs `unshare -n` (root or user namespaces) for a loopback-only browser")
    out = tmp_path / "reporter.json"
    done, seen = await run_scene("tests.support.reporter_browser", out, timeout=150)
    assert done.returncode == 0 and "error" not in seen, (
        seen.get("error"),
        done.stderr.decode(errors="replace")[-3000:],
    )
    # The token came in the fragment and left the address bar once read.
    assert "#token" not in seen["url_after_load"]
    assert seen["preview_width"] > 0
    assert seen["wrong_token_status"].startswith("The token is wrong or revoked (401")
    assert seen["live_after_wrong_token"] == []
    assert seen["status_live"].startswith("You are live")
    assert seen["meter_max_dbfs"] > -20  # the fake microphone beeps near full scale
    # Frames at the asked size, showing Chromium's fake camera: a moving shape and clock on a
    # flat background (Y varies, U and V near 0), changing from frame to frame.
    assert seen["video_sizes"] == [[320, 180]]
    assert seen["luma_std"] > 10 and seen["luma_changes"] > 1
    assert seen["mean_u"] < 20 and seen["mean_v"] < 20
    assert seen["audio_frames"] == 50 and seen["audio_peak"] > 10_000
    assert seen["protocol"] == "whip" and seen["native"][0] >= 320
    # Stop ended the session: the source went offline with the station's reason.
    assert seen["live_after_stop"] == []
    assert seen["states"][0][0] is True
    assert seen["states"][-1] == [False, "station ended the session"]
