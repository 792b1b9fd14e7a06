"""The control room's WebRTC test, run in a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.control_room_scene OUT'

A nats-server, distribution (WHEP) and ingest (WHIP) sharing a media grant secret with the
control service, the studio of `tests/support/control_room.py` (cards, mixer, graphics,
monitoring, control) and headless Chromium with a fake microphone, all on the namespace's
loopback (see `tests/support/reporter_browser.py` for why the servers run inside too). A director
logs in: the page plays the multiview over WHEP with media grants (each tile's colour is read off
the `<video>`), arms the microphone (WHIP to ingest: the talk source goes live) and holds a talk
button (the mixer's talkback follows the hand). What it saw goes to OUT for the test outside.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import tempfile
from pathlib import Path
from typing import Any

from services.common.handles import talk_source_id
from services.distribution.service import DistributionService
from services.distribution.settings import DistributionSettings
from tests.support.control_room import chromium, log_in, running_studio, wait_true
from tests.support.loopback_scene import scene_main
from tests.support.nats import NatsServer
from tests.support.services import running_service
from tests.support.station import running_ingest

# The mixer's multiview of three sources at 1280×720 (services/mixer/production.py): preview
# and program on the top half, then one row of three tiles 418×234 at x = 4 + 426 i, y = 364.
TILE_CENTRES = [((4 + 426 * i + 209) / 1280, (364 + 117) / 720) for i in range(3)]

READ_PIXEL = """([x, y]) => {
  const video = document.querySelector('#multiview');
  if (!video || !video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  const [px, py] = [Math.floor(x * canvas.width), Math.floor(y * canvas.height)];
  const d = context.getImageData(px, py, 1, 1).data;
  return [d[0], d[1], d[2]];
}"""
GRANT_AS_BEARER = """async () => {
  const me = await (await fetch('/api/me')).json();
  const answer = await fetch('/api/media-grant', {
    method: 'POST', headers: { 'X-CSRF-Token': me.csrfToken } });
  const { grant } = await answer.json();
  const reused = await fetch('/api/me', { headers: { Authorization: `Bearer ${grant}` } });
  return reused.status;
}"""


def expected_rgb(yuv: tuple[int, int, int]) -> list[int]:
    """A card's colour as a browser shows it (BT.601 video range to full-range RGB)."""
    y, u, v = yuv
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    rgb = (c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d)
    return [max(0, min(255, round(value))) for value in rgb]


async def pixel_near(page: Any, at: tuple[float, float], rgb: list[int]) -> list[int]:
    """The pixel once it is within 30 of `rgb` in every channel (the last read if never)."""
    seen: list[int] = []
    for _ in range(150):
        seen = await page.evaluate(READ_PIXEL, list(at)) or []
        if seen and all(abs(a - b) <= 30 for a, b in zip(seen, rgb, strict=True)):
            break
        await asyncio.sleep(0.1)
    return seen


async def talking(studio: Any, stations: list[str]) -> list[str]:
    """The stations the director's talk reaches, once they are `stations` (else the last)."""
    heard: list[str] = []
    for _ in range(100):
        state = await studio.state()
        heard = sorted(s for t in state.talk for s in t.stations)
        if heard == stations:
            break
        await asyncio.sleep(0.05)
    return heard


async def drive(out: dict[str, Any], shot: Path) -> None:
    nats = NatsServer().start()
    secret = secrets.token_urlsafe(32)
    try:
        with tempfile.TemporaryDirectory(prefix="baycast-room-") as data_dir:
            async with contextlib.AsyncExitStack() as stack:
                dist = await stack.enter_async_context(
                    running_service(
                        DistributionService,
                        DistributionSettings,
                        nats.url,
                        data_dir=data_dir,
                        x264_preset="ultrafast",
                        media_grant_secret=secret,
                    )
                )
                ingest = await stack.enter_async_context(
                    running_ingest(nats.url, media_grant_secret=secret, unready_seconds=0.0)
                )
                studio = await stack.enter_async_context(
                    running_studio(
                        nats.url,
                        exchange_url=dist.base_url(),
                        ingest_url=f"http://127.0.0.1:{ingest.http.port}",
                        media_grant_secret=secret,
                    )
                )
                await play(studio, ingest, out, shot)
    finally:
        nats.cleanup()


async def play(studio: Any, ingest: Any, out: dict[str, Any], shot: Path) -> None:
    operator, token = await studio.add_operator("director", "张导")
    async with chromium() as browser:
        page, console = await log_in(browser, studio, token)
        await wait_true(page, "document.body.dataset.multiview === 'playing'", 40)
        await wait_true(page, "document.querySelector('#multiview').videoWidth > 0", 20)
        out["multiview_size"] = await page.evaluate(
            "[document.querySelector('#multiview').videoWidth,"
            " document.querySelector('#multiview').videoHeight]"
        )
        out["tiles"] = {}
        for source, at in zip(studio.sources, TILE_CENTRES, strict=True):
            rgb = expected_rgb(studio.colour(source))
            out["tiles"][source] = [rgb, await pixel_near(page, at, rgb)]
        await page.screenshot(path=str(shot))
        out["grant_as_bearer"] = await page.evaluate(GRANT_AS_BEARER)

        # The microphone: published once over WHIP when armed; talk follows the hand.
        station = studio.sources[0]
        out["station"] = station
        await page.click("[data-tab=stations]")
        await page.click("#mic-arm")
        await wait_true(page, "document.querySelector('.mic').dataset.mic === 'live'", 30)
        talk_source = talk_source_id(operator)
        for _ in range(100):
            if talk_source in ingest.sources.live:
                break
            await asyncio.sleep(0.05)
        out["talk_source_online"] = talk_source in ingest.sources.live
        button = f"#stations button.talk[data-talk={station}]"
        await wait_true(page, f"!document.querySelector('{button}').disabled")
        await page.hover(button)
        await page.mouse.down()
        out["talk_on"] = await talking(studio, [station])
        await wait_true(page, f"document.querySelector('{button}').ariaPressed === 'true'")
        await page.mouse.up()
        out["talk_off"] = await talking(studio, [])
        await page.click("#mic-arm")  # disarm: the session ends
        for _ in range(100):
            if talk_source not in ingest.sources.live:
                break
            await asyncio.sleep(0.05)
        out["talk_source_after_disarm"] = talk_source in ingest.sources.live
        out["violations"] = console.violations
        out["errors"] = console.errors
        out["http_errors"] = console.http_errors


if __name__ == "__main__":
    scene_main(lambda out, path: drive(out, path.with_suffix(".png")), 130)
