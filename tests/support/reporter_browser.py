"""The reporter-page browser test's inside: run it in a network namespace that has only loopback.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.reporter_browser OUT.json'

Everything a packet could go to lives in that namespace: a nats-server, an ingest service (ICE
on 127.0.0.1 only), headless Chromium driven by Playwright (fake camera and microphone) and a
gRPC subscriber. The namespace's loopback is the only interface, so no packet can leave it; the
host's own loopback is not reachable from inside, which is why the server side runs here too.
What it saw is written to OUT.json for the test outside to check.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from playwright.async_api import Page, async_playwright

from services.common.bus import subject
from services.common.gen.baycast.v1 import control_pb2, media_pb2
from services.common.media import proto_to_i420, proto_to_pcm
from tests.support.loopback_scene import scene_main
from tests.support.nats import NatsServer
from tests.support.station import add_station, collect, running_ingest, wait_online

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-background-networking",
    "--no-first-run",
    "--no-sandbox",
    "--disable-gpu",
]
STATION = "reporter-bj"


async def wait_true(page: Page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll `expression` with `page.evaluate` (Playwright's `wait_for_function` evaluates
    strings inside the page, which the page's Content-Security-Policy rightly forbids)."""
    for _ in range(int(timeout_s / 0.1)):
        if await page.evaluate(expression):
            return
        await asyncio.sleep(0.1)
    status = await page.inner_text("#status")
    raise TimeoutError(f"{expression} still false after {timeout_s} s; status: {status}")


async def body_state(page: Page, state: str) -> None:
    await wait_true(page, f"document.body.dataset.state === {json.dumps(state)}")


async def drive(out: dict[str, Any], shot: Path) -> None:
    nats = NatsServer().start()
    try:
        async with running_ingest(nats.url, rtmp_addr="127.0.0.1:0") as ingest:
            token = await add_station(ingest, STATION, "北京记者")
            states: list[control_pb2.SourceState] = []

            async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
                states.append(state)

            await ingest.bus.subscribe(
                subject("source", STATION, "state"), control_pb2.SourceState, on_state
            )
            base = f"http://127.0.0.1:{ingest.http.port}/contribute/{STATION}"
            async with async_playwright() as pw:
                with tempfile.TemporaryDirectory(prefix="baycast-chromium-") as profile:
                    browser = await pw.chromium.launch_persistent_context(
                        profile,
                        executable_path=CHROMIUM,
                        args=CHROMIUM_ARGS,
                        headless=True,
                    )
                    try:
                        page = await browser.new_page()
                        await page.goto(f"{base}#token={token}")
                        out["url_after_load"] = page.url
                        await wait_true(page, "document.querySelector('#preview').readyState >= 2")
                        out["preview_width"] = await page.evaluate(
                            "document.querySelector('#preview').videoWidth"
                        )

                        # A wrong token first: a clear message, nothing goes live.
                        await page.fill("#token", token + "x")
                        await page.click("#go")
                        await body_state(page, "error")
                        out["wrong_token_status"] = await page.inner_text("#status")
                        out["live_after_wrong_token"] = sorted(ingest.sources.live)

                        await page.fill("#token", token)
                        await page.click("#go")
                        await body_state(page, "live")
                        await wait_online(ingest, STATION)
                        frames = await collect(
                            ingest,
                            f"source/{STATION}",
                            media_pb2.Rendition(width=320, height=180, audio_channels=1),
                            video=10,
                            audio=50,
                        )
                        out["status_live"] = await page.inner_text("#status")
                        levels = []
                        for _ in range(25):  # the fake microphone beeps once a second
                            level = await page.evaluate("document.body.dataset.level")
                            levels.append(-999.0 if level in (None, "-inf") else float(level))
                            await asyncio.sleep(0.1)
                        out["meter_max_dbfs"] = max(levels)
                        await page.screenshot(path=str(shot))
                        out["video_sizes"] = sorted({(f.width, f.height) for f in frames.video})
                        images = [proto_to_i420(f) for f in frames.video]
                        luma = [image[:180] for image in images]
                        chroma = np.stack([image[180:] for image in images])
                        # I420 below the luma: U (180/4 rows of 320) then V, as (rows, 320).
                        out["mean_u"] = float(chroma[:, :45].mean())
                        out["mean_v"] = float(chroma[:, 45:].mean())
                        out["luma_std"] = float(np.mean([y.std() for y in luma]))
                        out["luma_changes"] = float(np.abs(luma[-1] - luma[0].astype(int)).mean())
                        pcm = np.concatenate([proto_to_pcm(f) for f in frames.audio])
                        out["audio_frames"] = len(frames.audio)
                        out["audio_peak"] = int(np.abs(pcm.astype(np.int32)).max())
                        live = ingest.sources.live[STATION]
                        out["protocol"] = live.state.protocol
                        out["native"] = [live.state.video.width, live.state.video.height]

                        await page.click("#stop")
                        await body_state(page, "stopped")
                        for _ in range(100):
                            if STATION not in ingest.sources.live:
                                break
                            await asyncio.sleep(0.1)
                        await asyncio.sleep(0.3)
                        out["live_after_stop"] = sorted(ingest.sources.live)
                    finally:
                        await browser.close()
            out["states"] = [(s.online, s.reason) for s in states]
    finally:
        nats.cleanup()


if __name__ == "__main__":
    scene_main(lambda out, path: drive(out, path.with_suffix(".png")), 100)
