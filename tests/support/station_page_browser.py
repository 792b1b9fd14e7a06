"""The station-page browser test's inside, run in a loopback-only network namespace:

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.station_page_browser OUT'

A nats-server, ingest, the mixer with a production of two stations (gz and sz, aiortc publishers
of the test card with its tone), distribution (WHEP, station events, cues) and headless Chromium
on station gz's page, all on the namespace's loopback (see `tests/support/reporter_browser.py`
for why the servers run inside too). The driver switches the program, sends cues and talkback,
reads what the page shows (pixels of the return `<video>`, the tally frame's computed style, the
cue cards) and writes what it saw to OUT for the test outside to check.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from playwright.async_api import Page, async_playwright

from services.common.gen.baycast.v1 import exchange_pb2
from services.station.testcard import TestCard, tone_hz
from tests.support.exchange import Exchange, running_exchange
from tests.support.loopback_scene import scene_main
from tests.support.nats import NatsServer
from tests.support.reporter_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.station import publishing, wait_online

STATIONS = [("gz", "广州台"), ("sz", "深圳台")]
# A station outside the production whose source serves as the director's microphone: its tone
# in gz's return is the talkback heard.
TALK_SOURCE = ("bj", "北京")
PRODUCTION = "bay"
CARD_SIZE = (640, 360)
PROBE = (0.875, 0.125)  # the card's background, top right: the same on every frame

# Reads one pixel of the return <video> through a canvas (same-origin media: not tainted).
READ_PIXEL = """([x, y]) => {
  const video = document.querySelector('#return');
  if (!video.videoWidth) return null;
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(video, 0, 0);
  const [px, py] = [Math.floor(x * canvas.width), Math.floor(y * canvas.height)];
  const d = context.getImageData(px, py, 1, 1).data;
  return [d[0], d[1], d[2]];
}"""
TALLY_SEEN = """() => ({
  tally: document.body.dataset.tally,
  label: document.querySelector('#tally-label').textContent,
  border: getComputedStyle(document.querySelector('#tally-frame')).borderTopColor,
  width: getComputedStyle(document.querySelector('#tally-frame')).borderTopWidth,
  measures: performance.getEntriesByName('baycast:tally').map((m) => ({
    state: m.detail, at: performance.timeOrigin + m.startTime, ms: m.duration })),
})"""
# The page's own SSE parser, fed a stream split at awkward places.
SSE_PARSER = """async () => {
  const { SseParser } = await import('/contribute/assets/sse.js');
  const text = 'retry: 2000\\r\\n\\r\\n: keepalive\\r\\nevent: tally\\r\\n' +
    'data: {"a":\\r\\ndata: 1}\\r\\n\\r\\ndata:x\\rdata: y\\r\\rdata\\nid: 9\\n\\n' +
    'event: nodata\\n\\n';
  const results = [];
  for (const size of [1, 2, 3, 1000]) {
    const events = [];
    let retry = null;
    const parser = new SseParser((e) => events.push(e), (ms) => (retry = ms));
    for (let i = 0; i < text.length; i += size) parser.push(text.slice(i, i + size));
    results.push({ size, retry, events });
  }
  return results;
}"""


def expected_rgb(station: str) -> list[int]:
    """The card's background as a browser shows it (BT.601 video range to full-range RGB)."""
    y, u, v = TestCard(station, station, *CARD_SIZE).background
    c, d, e = 1.164 * (y - 16), u - 128, v - 128
    rgb = (c + 1.596 * e, c - 0.391 * d - 0.813 * e, c + 2.018 * d)
    return [max(0, min(255, round(value))) for value in rgb]


# The return's sound in the page: level (dB) at each asked frequency, and the loudest one.
AUDIO_LEVELS = """async (freqs) => {
  const video = document.querySelector('#return');
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  analyser.smoothingTimeConstant = 0.8;
  context.createMediaStreamSource(video.srcObject).connect(analyser);
  const data = new Float32Array(analyser.frequencyBinCount);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  analyser.getFloatFrequencyData(data);
  const hz = context.sampleRate / analyser.fftSize;
  const level = (f) => Math.max(...[-2, -1, 0, 1, 2].map((d) => data[Math.round(f / hz) + d]));
  let loudest = 0;
  for (let i = 1; i < data.length; i++) if (data[i] > data[loudest]) loudest = i;
  await context.close();
  return { levels: freqs.map(level), loudest_hz: loudest * hz };
}"""


async def wait_true(page: Page, expression: str, timeout_s: float = 20.0) -> Any:
    """Poll `expression` with `page.evaluate` (wait_for_function would need the page's CSP to
    allow string evaluation, which it rightly does not)."""
    for _ in range(int(timeout_s / 0.05)):
        value = await page.evaluate(expression)
        if value:
            return value
        await asyncio.sleep(0.05)
    state = await page.evaluate(
        "[document.body.dataset.events, document.body.dataset.returnState,"
        " document.querySelector('#exchange-status').textContent,"
        " document.querySelector('#return-status').textContent]"
    )
    raise TimeoutError(f"{expression} still false after {timeout_s} s; page: {state}")


async def pixel_near(page: Page, rgb: list[int], timeout_s: float = 15.0) -> list[int]:
    """The probe's pixel once it is within 30 of `rgb` in every channel (the last read if not)."""
    seen: list[int] = []
    for _ in range(int(timeout_s / 0.1)):
        seen = await page.evaluate(READ_PIXEL, list(PROBE)) or []
        if seen and all(abs(a - b) <= 30 for a, b in zip(seen, rgb, strict=True)):
            break
        await asyncio.sleep(0.1)
    return seen


async def tally_after(page: Page, state: str, since_ms: float) -> dict[str, Any]:
    """What the page showed once its tally became `state`, and the measure of that change."""
    await wait_true(page, f"document.body.dataset.tally === {json.dumps(state)}", 10)
    for _ in range(50):  # the measure is taken at the next frame
        seen: dict[str, Any] = await page.evaluate(TALLY_SEEN)
        changes = [m for m in seen["measures"] if m["state"] == state and m["at"] >= since_ms]
        if changes:
            first = changes[0]
            seen["render_ms"] = first["ms"]
            seen["command_to_render_ms"] = first["at"] + first["ms"] - since_ms
            del seen["measures"]
            return seen
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no tally measure for {state}")


async def viewers(x: Exchange) -> list[list[str]]:
    reply = await x.exchange_command(
        exchange_pb2.ExchangeCommand(viewers=exchange_pb2.ExchangeCommand.ListViewers())
    )
    return sorted(
        [v.handle, v.principal, v.state, v.rendition] for v in reply.viewers if v.state != "closed"
    )


async def drive(out: dict[str, Any], shot: Path) -> None:
    nats = NatsServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="baycast-exchange-") as data_dir:
            async with running_exchange(
                nats.url,
                data_dir,
                STATIONS,
                production_id=PRODUCTION,
                others=[TALK_SOURCE],
                leveled=False,  # the tones' levels are compared in dBFS
            ) as x:
                talker = TALK_SOURCE[0]
                async with (
                    publishing(x.ingest, "gz", x.tokens["gz"], size=CARD_SIZE),
                    publishing(x.ingest, "sz", x.tokens["sz"], size=CARD_SIZE),
                    publishing(x.ingest, talker, x.tokens[talker], size=(320, 180)),
                ):
                    for station in ("gz", "sz", talker):
                        await wait_online(x.ingest, station)
                    await browse(x, out, shot)
    finally:
        nats.cleanup()


async def browse(x: Exchange, out: dict[str, Any], shot: Path) -> None:
    talker = TALK_SOURCE[0]
    out["expected"] = {sid: expected_rgb(sid) for sid, _ in STATIONS}
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="baycast-chromium-") as profile:
            # A phone's autoplay policy: no sound before the user taps.
            args = [*CHROMIUM_ARGS, "--autoplay-policy=document-user-activation-required"]
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=args, headless=True
            )
            try:
                page = await browser.new_page()
                page.on(
                    "response",
                    lambda r: (
                        r.status >= 400
                        and out.setdefault("http_errors", []).append([r.status, r.url])
                    ),
                )
                await page.goto(f"{x.ingest_url}/station/gz#token={x.tokens['gz']}")
                out["url_after_load"] = page.url
                out["sse_parser"] = await page.evaluate(SSE_PARSER)
                await wait_true(page, "document.body.dataset.events === 'connected'")
                await wait_true(page, "document.body.dataset.returnState === 'playing'", 30)
                await wait_true(page, "document.querySelector('#return').videoWidth > 0", 20)
                out["station_name"] = await page.inner_text("#station-name")
                out["feeds"] = await page.evaluate(
                    "[...document.querySelectorAll('#feed option')].map((o) => o.textContent)"
                )
                out["return_size"] = await page.evaluate(
                    "[document.querySelector('#return').videoWidth,"
                    " document.querySelector('#return').videoHeight]"
                )
                out["playing_muted"] = await page.evaluate(
                    "[!document.querySelector('#return').paused,"
                    " document.querySelector('#return').muted,"
                    " !document.querySelector('#unmute').hidden]"
                )
                # A page that captures the camera may autoplay sound (Chromium's policy); one
                # that may not shows the tap-to-unmute button.
                if out["playing_muted"][2]:
                    await page.click("#unmute")
                out["after_tap"] = await page.evaluate(
                    "[document.querySelector('#return').muted,"
                    " document.querySelector('#unmute').hidden]"
                )

                # Off: sz on program and on preview. The return shows sz's card.
                await x.cut("sz")
                await x.preview("sz")
                out["off"] = await tally_after(page, "off", 0)
                out["pixel_sz"] = await pixel_near(page, out["expected"]["sz"])
                # gz's return is its mix-minus: sz's tone, never gz's own.
                out["tones"] = {"gz": tone_hz("gz"), "sz": tone_hz("sz"), "talk": tone_hz(talker)}
                out["audio_sz_on_air"] = await page.evaluate(
                    AUDIO_LEVELS, [tone_hz("gz"), tone_hz("sz"), tone_hz(talker)]
                )

                # A cut to gz: red within a frame of the event, gz's card in the return.
                cut_at = time.time() * 1000
                await x.cut("gz")
                out["program"] = await tally_after(page, "program", cut_at)
                out["pixel_gz"] = await pixel_near(page, out["expected"]["gz"])
                await page.screenshot(path=str(shot))

                # A cut away (preview stays sz): off; gz on preview: green.
                cut_at = time.time() * 1000
                await x.cut("sz")
                out["cut_away"] = await tally_after(page, "off", cut_at)
                since = time.time() * 1000
                await x.preview("gz")
                out["preview"] = await tally_after(page, "preview", since)
                await x.preview("sz")
                await tally_after(page, "off", since)

                await cues(x, page, out)
                await talkback(x, page, out)
                await recovery(x, page, out)
                await pictures(x, page, out)
            finally:
                await browser.close()


async def cues(x: Exchange, page: Page, out: dict[str, Any]) -> None:
    countdown = time.time_ns() // 1000 + 30_000_000
    sent = await x.send_cue("gz", "30 秒后上场 / 30 s to air", countdown)
    item = f"#cue-list li[data-cue-id='{sent.id}']"
    await wait_true(page, f"!!document.querySelector({json.dumps(item)})", 10)
    out["cue_text"] = await page.inner_text(f"{item} .cue-text")
    out["cue_countdowns"] = []
    for _ in range(3):  # it counts down on its own
        out["cue_countdowns"].append(await page.inner_text(f"{item} .cue-countdown"))
        await asyncio.sleep(1.05)
    out["cues_visible"] = await page.evaluate("!document.querySelector('#cues').hidden")
    # The OK button by keyboard: focus it and press Enter.
    await page.focus(f"{item} .cue-ok")
    await page.keyboard.press("Enter")
    acknowledged = await x.wait_cue(lambda c: c.id == sent.id and c.acknowledged_at_us > 0)
    out["cue_ack"] = {
        "by": acknowledged.acknowledged_by,
        "after_send_s": (acknowledged.acknowledged_at_us - sent.sent_at_us) / 1e6,
    }
    selector = json.dumps(item)
    await wait_true(page, f"document.querySelector({selector}).dataset.acknowledged === 'true'", 10)
    out["cue_button_after_ack"] = await page.inner_text(f"{item} .cue-ok")
    await x.clear_cue(sent.id)
    await wait_true(page, f"!document.querySelector({selector})", 10)
    out["cues_hidden_after_clear"] = await page.evaluate("document.querySelector('#cues').hidden")


async def talkback(x: Exchange, page: Page, out: dict[str, Any]) -> None:
    out["talkback_before"] = await page.evaluate("document.querySelector('#talkback').hidden")
    talker = TALK_SOURCE[0]
    await x.talk("gz", True, source=talker)
    await wait_true(page, "!document.querySelector('#talkback').hidden", 10)
    out["talkback_text"] = await page.inner_text("#talkback")
    freqs = [tone_hz("gz"), tone_hz("sz"), tone_hz(talker)]
    out["audio_talking"] = await page.evaluate(AUDIO_LEVELS, freqs)
    await x.talk("gz", False, source=talker)
    await wait_true(page, "document.querySelector('#talkback').hidden", 10)
    out["audio_after_talk"] = await page.evaluate(AUDIO_LEVELS, freqs)


async def recovery(x: Exchange, page: Page, out: dict[str, Any]) -> None:
    """Distribution ends the return's session and the event stream: the page comes back."""
    playing = "document.body.dataset.returnState === 'playing'"
    started = time.monotonic()
    whep = x.distribution.whep_viewers
    for viewer in whep.viewers(PRODUCTION):
        await whep.stop(viewer.id, "ended by the test")
    await wait_true(page, f"!({playing})", 40)
    await wait_true(page, playing, 30)
    out["return_back_after_s"] = time.monotonic() - started
    out["pixel_after_reconnect"] = await pixel_near(page, out["expected"]["sz"])

    started = time.monotonic()
    # The connection drops (as when a proxy or the network cuts it): the server's side ends.
    for streams in x.distribution.exchange.station_events.streams.values():
        for stream in list(streams):
            stream.end(abort=True)
    await wait_true(page, "document.body.dataset.events !== 'connected'", 10)
    await wait_true(page, "document.body.dataset.events === 'connected'", 20)
    out["events_back_after_s"] = time.monotonic() - started
    since = time.time() * 1000
    await x.cut("gz")
    out["program_after_reconnect"] = await tally_after(page, "program", since)
    await x.cut("sz")
    await tally_after(page, "off", since)


async def pictures(x: Exchange, page: Page, out: dict[str, Any]) -> None:
    """Clean picture: a new WHEP session (the old one DELETEd); Stop ends it."""
    out["viewers_program"] = await viewers(x)
    await page.check("input[name=picture][value=clean]")
    await wait_true(
        page, "document.querySelector('#return').dataset.feed.endsWith('?picture=clean')", 5
    )
    out["clean_feed"] = await page.evaluate("document.querySelector('#return').dataset.feed")
    await wait_true(page, "document.body.dataset.returnState === 'playing'", 20)
    out["pixel_clean"] = await pixel_near(page, out["expected"]["sz"])
    # The page may play on before the new session's DTLS is done: wait for it (up to 5 s).
    for _ in range(50):
        out["viewers_clean"] = await viewers(x)
        if [v[2] for v in out["viewers_clean"]] == ["connected"]:
            break
        await asyncio.sleep(0.1)
    await page.click("#return-toggle")
    await wait_true(page, "document.body.dataset.returnState === 'stopped'", 5)
    for _ in range(50):
        out["viewers_stopped"] = await viewers(x)
        if not out["viewers_stopped"]:
            break
        await asyncio.sleep(0.1)


if __name__ == "__main__":
    scene_main(lambda out, path: drive(out, path.with_suffix(".png")), 110)
