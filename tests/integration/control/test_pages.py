"""The control room's pages: what the service serves, and operators running a real show from
headless Chromium (Playwright).

The browser tests drive a studio of real services (`tests/support/control_room.py`): three cards
of known colours and tones, the mixer, graphics, monitoring and the control service on one
nats-server. What the pages do is checked where it lands: the program read over gRPC (colours,
blends, the keyed lower third, the tones), the mixer's state, and what the other pages show. The
multiview over WHEP and the director's microphone over WHIP need WebRTC, so that test runs in a
loopback-only network namespace (`tests/support/control_room_scene.py`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from services.common.gen.baycast.v1 import media_pb2, mixer_pb2, rundown_pb2
from services.common.settings import SettingsError, load_settings
from services.control.service import ControlService
from services.control.settings import ControlSettings
from tests.integration.control.conftest import AddOperator, Show, base_url, control_settings
from tests.support.control_room import (
    POST_COMMAND,
    Studio,
    centre,
    chromium,
    log_in,
    near,
    open_page,
    running_studio,
    wait_true,
)
from tests.support.loopback_scene import run_scene, unshare_works
from tests.support.mixer import audio_of, collect, yuv_at
from tests.support.nats import NatsServer
from tests.support.services import running_service

Cmd = mixer_pb2.MixerCommand
EXCHANGE = "http://127.0.0.1:8104"
INGEST = "http://127.0.0.1:8101"
PROGRAM_SOURCE = "document.querySelector('#switcher').dataset.program"
PREVIEW_SOURCE = "document.querySelector('#switcher').dataset.preview"
# A slider moved as a hand moves it: its value, an input event, then the change on release.
MOVE_SLIDER = """([selector, value]) => {
  const slider = document.querySelector(selector);
  slider.value = String(value);
  slider.dispatchEvent(new Event('input', { bubbles: true }));
  slider.dispatchEvent(new Event('change', { bubbles: true }));
}"""
# Each source's channel strip on the audio page: its controls' ids are `<control>-<source>`.
STRIP_CONTROLS = [
    "trim",
    "hpf-on",
    "hpf-hz",
    "gate-on",
    "gate-db",
    "comp-on",
    "comp-db",
    "comp-ratio",
    "eq-on",
    "eq-low",
    "eq-mid",
    "eq-high",
]


def js(value: str) -> str:
    """A JavaScript string literal (ids are CSS identifiers too: no quotes in selectors)."""
    return json.dumps(value)


def unexpected(errors: list[str]) -> list[str]:
    """Console errors other than the browser's note on a refusal the test asked for."""
    return [e for e in errors if "status of 403" not in e]


async def test_pages_and_security_headers_everywhere(
    nats_server: NatsServer, http: aiohttp.ClientSession
) -> None:
    settings = control_settings(exchange_url=EXCHANGE + "/", ingest_url=INGEST)
    async with running_service(
        ControlService, ControlSettings, nats_server.url, **settings
    ) as control:
        url = base_url(control)
        for path, kind in (
            ("/", "text/html"),
            ("/login", "text/html"),
            ("/static/login.js", "text/javascript"),
            ("/static/app.js", "text/javascript"),
            ("/static/control.css", "text/css"),
            ("/static/vendor/preact.js", "text/javascript"),
            ("/static/vendor/hooks.js", "text/javascript"),
            ("/static/vendor/htm.js", "text/javascript"),
            ("/api/openapi.json", "application/json"),
            ("/api/me", "application/json"),  # 401, headers all the same
            ("/metrics", "text/plain"),
            ("/healthz", "application/json"),
        ):
            async with http.get(url + path) as response:
                assert response.content_type == kind, path
                headers = response.headers
                body = await response.text()
            csp = headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "script-src 'self';" in csp, path
            assert "style-src 'self';" in csp and "'unsafe-inline'" not in csp
            assert "frame-ancestors 'none'" in csp and "'unsafe-eval'" not in csp
            assert f"connect-src 'self' {EXCHANGE} {INGEST};" in csp
            assert f"media-src 'self' blob: mediastream: {EXCHANGE} {INGEST};" in csp
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "no-referrer"
            assert headers["X-Frame-Options"] == "DENY"
            assert "Strict-Transport-Security" not in headers  # plain HTTP
            if path in ("/", "/login"):
                # Scripts are modules of this origin; nothing inline, no inline style.
                scripts = re.findall(r"<script[^>]*>", body)
                assert all(
                    re.fullmatch(r'<script type="module" src="/static/\w+\.js">', s)
                    for s in scripts
                ), scripts
                assert "<style" not in body and "style=" not in body and " on" not in body
            if path == "/":
                assert '<script type="module" src="/static/app.js">' in body
            if path == "/static/vendor/hooks.js":
                assert 'from"./preact.js"' in body and 'from"preact"' not in body
                assert "sourceMappingURL" not in body
                etag = headers["ETag"]
        async with http.get(
            url + "/static/vendor/hooks.js", headers={"If-None-Match": etag}
        ) as response:
            assert response.status == 304
        for missing in ("/static/../service.py", "/static/vendor/react.js", "/static/nope.js"):
            async with http.get(url + missing) as response:
                assert response.status == 404, missing


def test_the_service_refuses_to_start_without_its_front_end_library(tmp_path: Path) -> None:
    settings = load_settings(
        ControlSettings, "control", environ={}, web_modules=str(tmp_path / "node_modules")
    )
    with pytest.raises(SettingsError, match="make setup"):
        ControlService(settings)
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "control"],
        env={**os.environ, "BAYCAST_CONTROL_WEB_MODULES": str(tmp_path)},
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 1
    said = done.stderr.decode()
    assert said.startswith("baycast control: the control room's front-end modules") and (
        "Run `make setup`" in said
    ), said


async def test_metrics_count_requests_commands_and_streams(
    control: ControlService, show: Show, add_operator: AddOperator, http: aiohttp.ClientSession
) -> None:
    _, viewer = await add_operator("viewer")
    url = base_url(control)
    headers = {"Authorization": f"Bearer {viewer}"}
    async with http.post(
        f"{url}/api/productions/{show.id}/mixer", json={"ftb": {}}, headers=headers
    ) as response:
        assert response.status == 403
    async with http.get(f"{url}/metrics") as response:
        text = await response.text()
    assert 'baycast_control_commands_total{kind="mixer.ftb",result="PERMISSION_DENIED"}' in text
    route = 'route="/api/productions/{prod}/mixer",status="403"'
    assert f"baycast_control_api_requests_total{{{route}}}" in text
    assert "baycast_control_event_clients 0.0" in text
    assert "baycast_control_ready 1.0" in text
    assert viewer not in text


def between(
    a: tuple[int, ...], b: tuple[int, ...], margin: int = 6
) -> Callable[[np.ndarray], bool]:
    """Whether a frame's centre is a blend of `a` and `b`: strictly inside on every channel."""

    def blended(image: np.ndarray) -> bool:
        got = centre(image)
        return all(
            min(p, q) + margin < g < max(p, q) - margin for g, p, q in zip(got, a, b, strict=True)
        )

    return blended


async def test_a_director_switches_from_the_page(nats_server: NatsServer) -> None:
    async with running_studio(nats_server.url) as studio, chromium() as browser:
        _, token = await studio.add_operator("director", "张导")
        page, console = await log_in(browser, studio, token)
        gz, sz, fs = studio.sources
        await wait_true(page, f"{PROGRAM_SOURCE} === {js(gz)}")

        # Buttons: 佛山台 to preview, then CUT.
        await page.click(f"#switcher button[data-bus=preview][data-source={fs}]")
        await wait_true(page, f"{PREVIEW_SOURCE} === {js(fs)}")
        await page.click("#cut")
        await studio.program_shows(studio.colour(fs))
        await wait_true(page, f"{PROGRAM_SOURCE} === {js(fs)}")
        assert (await studio.state()).switcher.program == fs

        # Keys: 1 puts the first source (广州台) on preview, Space cuts.
        await page.keyboard.press("1")
        await wait_true(page, f"{PREVIEW_SOURCE} === {js(gz)}")
        await page.keyboard.press(" ")
        await studio.program_shows(studio.colour(gz))
        await wait_true(page, f"{PROGRAM_SOURCE} === {js(gz)}")

        # AUTO with a one-second mix to 深圳台: the program passes through a blend.
        await page.keyboard.press("2")
        await wait_true(page, f"{PREVIEW_SOURCE} === {js(sz)}")
        await page.select_option("#transition-type", "mix")
        await page.fill("#transition-ms", "1000")
        await page.keyboard.press("Escape")  # out of the field: keys switch again
        blend = asyncio.create_task(
            studio.program_frame(between(studio.colour(gz), studio.colour(sz)), timeout=8)
        )
        await asyncio.sleep(0.3)  # the reader is subscribed before the transition starts
        await page.click("#auto")
        mid = await blend
        assert not near(centre(mid), studio.colour(gz), 6)
        assert not near(centre(mid), studio.colour(sz), 6)
        await studio.program_shows(studio.colour(sz))
        await wait_true(page, f"{PROGRAM_SOURCE} === {js(sz)}")

        # The T-bar held at half way: the program is the mean of 深圳台 and 佛山台 (±3).
        await page.keyboard.press("3")
        await wait_true(page, f"{PREVIEW_SOURCE} === {js(fs)}")
        move = """(value) => {
          const bar = document.querySelector('#t-bar');
          bar.value = String(value);
          bar.dispatchEvent(new Event('input', { bubbles: true }));
          bar.dispatchEvent(new Event('change', { bubbles: true }));
        }"""
        await page.evaluate(move, 500)
        half = tuple((p + q) / 2 for p, q in zip(studio.colour(sz), studio.colour(fs), strict=True))
        image = await studio.program_shows(half)
        assert near(centre(image), half, 3)
        await wait_true(page, "document.querySelector('#t-bar').value === '500'")
        state = await studio.state()
        assert state.transition.active and state.transition.manual
        assert abs(state.transition.position - 0.5) < 1e-9
        await page.evaluate(move, 1000)  # all the way: 佛山台 is on program
        await studio.program_shows(studio.colour(fs))
        await wait_true(page, f"{PROGRAM_SOURCE} === {js(fs)}")
        await wait_true(page, "document.querySelector('#t-bar').value === '0'")

        # A layout with a source per box: 佛山台 left, 广州台 right, side by side.
        await page.select_option("#layout-name", "side_by_side")
        await wait_true(page, "document.querySelectorAll('#layouts select[data-box]').length === 2")
        await page.select_option("#layouts select[data-box='0']", fs)
        await page.select_option("#layouts select[data-box='1']", gz)
        await page.click("#layout-take")

        def side_by_side(image: np.ndarray) -> bool:
            left, right = yuv_at(image, 80, 90), yuv_at(image, 240, 90)
            return near(left, studio.colour(fs)) and near(right, studio.colour(gz))

        await studio.program_frame(side_by_side)
        await wait_true(page, "document.querySelector('#layouts').dataset.onAir === 'side_by_side'")
        layout = (await studio.state()).switcher.layout
        assert (layout.kind, list(layout.sources)) == ("side_by_side", [fs, gz])

        # Every change is in the as-run log, by name, on the rundown tab.
        await page.click("[data-tab=rundown]")
        await wait_true(page, "document.querySelector('#asrun')?.textContent.includes('张导 cut')")
        assert console.violations == [] and console.errors == [], console
        assert console.http_errors == []
        # A refusal is said on the page, in the service's words: no rundown is loaded here.
        await page.click("#rundown-next")
        said = await wait_true(page, "document.querySelector('.toasts').textContent")
        assert "下一条 next" in said and "rundown" in said.lower(), said


async def test_two_browsers_and_the_cli_see_the_same_show(nats_server: NatsServer) -> None:
    async with running_studio(nats_server.url) as studio, chromium() as browser:
        _, zhang = await studio.add_operator("director", "张导")
        _, li = await studio.add_operator("director", "李导")
        first, _ = await log_in(browser, studio, zhang)
        second, _ = await log_in(browser, studio, li)
        gz, sz, fs = studio.sources

        # A cut on the first page's program bus shows on the second page.
        started = time.monotonic()
        await first.click(f"#switcher button[data-bus=program][data-source={sz}]")
        await wait_true(second, f"{PROGRAM_SOURCE} === {js(sz)}", 5)
        assert time.monotonic() - started < 1.0
        await studio.program_shows(studio.colour(sz))

        # A cut from the CLI's path (the bus): both pages follow, with their tiles' tally.
        started = time.monotonic()
        await studio.switch(Cmd(cut=Cmd.Cut(source=fs)))
        for page in (first, second):
            await wait_true(page, f"{PROGRAM_SOURCE} === {js(fs)}", 5)
            await wait_true(
                page,
                f"document.querySelector('.tiles [data-source={fs}]').dataset.tally === 'program'",
                5,
            )
        assert time.monotonic() - started < 1.0
        tallies = await second.evaluate(
            "[...document.querySelectorAll('.tiles li')].map((t) => t.dataset.tally)"
        )
        assert tallies.count("program") == 1 and tallies[2] == "program"

        # A rundown started from the CLI: both pages show its segments, the current and the
        # next; "take next" on one page moves the show on every page.
        rundown = rundown_pb2.Rundown(
            name="启航",
            segments=[
                rundown_pb2.RundownSegment(title="开场 Opening", program=gz),
                rundown_pb2.RundownSegment(title="深圳连线", duration_ms=90_000, program=sz),
            ],
        )
        for cmd in (
            rundown_pb2.RundownCommand(load=rundown),
            rundown_pb2.RundownCommand(start=rundown_pb2.RundownCommand.Start(segment=0)),
        ):
            await studio.bus.request(
                f"baycast.v1.prod.{studio.id}.rundown.cmd", cmd, rundown_pb2.RundownStatus
            )
        for page in (first, second):
            await page.click("[data-tab=rundown]")
            await wait_true(page, "document.querySelector('#rundown').dataset.segment === '0'", 5)
        segments = """[...document.querySelectorAll('#rundown .segments li')].map(
            (li) => [li.className, li.querySelector('.segment-title').textContent,
                     li.querySelector('.segment-time').textContent])"""
        listed = await second.evaluate(segments)
        assert [(c, t) for c, t, _ in listed] == [("current", "开场 Opening"), ("next", "深圳连线")]
        assert listed[1][2] == "1:30"
        await first.click("#rundown-next")
        for page in (first, second):
            await wait_true(page, "document.querySelector('#rundown').dataset.segment === '1'", 5)
        await studio.program_shows(studio.colour(sz))
        current = (await second.evaluate(segments))[1]
        assert current[0] == "current", current  # counting down its 90 s
        assert re.fullmatch(r"0:0\d / 1:30 \(剩 left 1:[23]\d\)", current[2]), current


async def test_graphics_and_viewer_roles_and_a_revoked_token(nats_server: NatsServer) -> None:
    async with running_studio(nats_server.url) as studio, chromium() as browser:
        gz, sz, _fs = studio.sources
        await studio.switch(Cmd(cut=Cmd.Cut(source=gz)))
        _, token = await studio.add_operator("graphics", "王图文")
        page, console = await log_in(browser, studio, token)

        # No switcher for the graphics role: not offered, and refused by the server.
        assert await page.evaluate("document.querySelector('#switcher')") is None
        assert await page.evaluate("document.querySelector('[data-tab=switcher]')") is None
        status, body = await page.evaluate(
            POST_COMMAND, [studio.id, "mixer", {"cut": {"source": sz}}]
        )
        assert (status, body["code"], body["field"]) == (403, "PERMISSION_DENIED", "cut")
        assert (await studio.state()).switcher.program == gz  # nothing changed

        # A lower third in Chinese: the preview first, then on air, keyed over the program.
        await wait_true(page, "!!document.querySelector('#gfx-template option[value=lower_third]')")
        await page.select_option("#gfx-template", "lower_third")
        await page.fill("input[name=name]", "李明")
        await page.fill("input[name=title]", "深圳台记者")
        await wait_true(page, "document.querySelector('#gfx-preview')?.alt.includes('lower_third')")
        await page.click("#gfx-show")
        rendition = media_pb2.Rendition(width=640, height=360, no_audio=True)
        card_y = studio.colour(gz)[0]

        def keyed(image: np.ndarray) -> bool:
            # 640×360: the white box's left edge (x 44–52, y 270–296) and the name's glyphs
            # (dark #1A1A1A strokes on white, x 55–230, y 270–286); the card elsewhere.
            edge = image[270:296, 44:52]
            name = image[270:286, 55:230]
            return bool(
                edge.min() > 200
                and name.min() < 100
                and name.max() > 200
                and abs(int(image[60, 320]) - card_y) <= 3
            )

        await studio.program_frame(keyed, timeout=10, rendition=rendition)
        await wait_true(page, "!!document.querySelector('.on-air [data-instance=lower_third]')")
        assert console.violations == [] and unexpected(console.errors) == [], console

        # A viewer: reads everything, is offered no control, changes nothing.
        _, viewer = await studio.add_operator("viewer")
        watching, _ = await log_in(browser, studio, viewer)
        assert await watching.evaluate("document.querySelector('[data-tab=switcher]')") is None
        await watching.click("[data-tab=graphics]")
        await wait_true(watching, "!!document.querySelector('.on-air [data-instance=lower_third]')")
        assert await watching.evaluate("document.querySelector('#gfx-show')") is None
        await watching.click("[data-tab=audio]")
        assert await watching.evaluate(
            "[...document.querySelectorAll('#audio input[type=range]')].every((f) => f.disabled)"
        )
        assert await watching.evaluate(
            "[...document.querySelectorAll('#audio button')].every((b) => b.disabled)"
        )
        for service, body in (
            ("mixer", {"cut": {"source": sz}}),
            ("graphics", {"hide": {"instance": "lower_third"}}),
        ):
            status, _ = await watching.evaluate(POST_COMMAND, [studio.id, service, body])
            assert status == 403, service
        assert (await studio.state()).switcher.program == gz

        # A revoked token: its open page goes back to the login page, and it logs in no more.
        revoked_id, revoked = await studio.add_operator("director", "赵导")
        gone, _ = await log_in(browser, studio, revoked)
        await studio.revoke(revoked_id)
        await wait_true(gone, "location.pathname === '/login'", 10)
        await wait_true(gone, "document.querySelector('#status').textContent.includes('session')")
        fresh, _ = await open_page(browser)
        await fresh.goto(f"{studio.url}/login")
        await fresh.fill("#token", revoked)
        await fresh.click("button[type=submit]")
        await wait_true(fresh, "document.body.dataset.state === 'refused'")
        assert "revoked" in await fresh.inner_text("#status")
        assert fresh.url == f"{studio.url}/login"


def tone_amplitude(samples: np.ndarray, hz: float) -> float:
    """Amplitude of one tone in the left channel (Hann window, peak bin around `hz`)."""
    left = samples[:, 0].astype(np.float64)
    window = np.hanning(len(left))
    spectrum = np.abs(np.fft.rfft(left * window)) / (window.sum() / 2)
    k = round(hz / (48_000 / len(left)))
    return float(spectrum[max(0, k - 2) : k + 3].max())


async def program_tones(studio: Studio) -> dict[str, float]:
    """Each card's tone in one second of the program's sound (after the buffers settle)."""
    messages = await collect(
        studio.mixer.grpc_endpoint,
        f"prod/{studio.id}/program",
        1.4,
        media_pb2.Rendition(no_video=True),
    )
    audio = [m for m in messages if m.WhichOneof("body") == "audio"][8:]
    samples = audio_of(audio)
    assert len(samples) >= 24_000, len(samples)
    return {sid: tone_amplitude(samples, card.tone_hz) for sid, card in studio.cards.items()}


async def test_an_audio_fader_at_minus_infinity_and_a_channel_strip(
    nats_server: NatsServer,
) -> None:
    async with running_studio(nats_server.url) as studio, chromium() as browser:
        gz, sz, fs = studio.sources
        _, token = await studio.add_operator("audio", "陈音频")
        page, console = await log_in(browser, studio, token)
        assert await page.evaluate("document.querySelector('[data-tab=switcher]')") is None
        await wait_true(page, "!!document.querySelector('#audio')")  # the audio role's tab
        before = await program_tones(studio)
        assert min(before.values()) > 500, before  # every card is heard

        await page.focus(f"#fader-{sz}")
        await page.keyboard.press("Home")  # the bottom stop: −∞
        row = f"document.querySelector('#audio tr[data-source={sz}]')"
        await wait_true(page, f"{row}.dataset.mute === 'true'")
        assert "−∞" in await page.inner_text(f"#audio tr[data-source={sz}] .fader output")
        state = await studio.state()
        audio = {a.source: a for a in state.switcher.audio}
        assert audio[sz].mute and audio[sz].gain_db == -96

        after = await program_tones(studio)
        drop_db = 20 * np.log10(before[sz] / max(after[sz], 1e-9))
        assert drop_db >= 40, (before, after)
        for other in (gz, fs):  # the others are as loud as before (within 1 dB)
            assert abs(20 * np.log10(after[other] / before[other])) < 1, (before, after)

        # Every source's channel strip, offered to the audio role.
        unusable = await page.evaluate(
            """([sources, controls]) => sources
              .flatMap((s) => controls.map((c) => document.getElementById(`${c}-${s}`)))
              .filter((control) => !control || control.disabled).length""",
            [studio.sources, STRIP_CONTROLS],
        )
        assert unusable == 0, unusable
        # The compressor switched on, its threshold pulled down to -50 dBFS: the mixer applies it
        # and the reduction shows beside the meter, (-12 + 50) × (1 - 1/3) dB at the default 3:1
        # (the card's tone peaks at -12 dBFS).
        await page.click(f"#comp-on-{gz}")
        comp = f"document.querySelector('#audio tr[data-strip={gz}] [data-stage=comp]')"
        await wait_true(page, f"{comp}.dataset.on === 'true'")
        await page.evaluate(MOVE_SLIDER, [f"#comp-db-{gz}", -50])
        await wait_true(page, f"{comp}.querySelector('output').textContent.includes('-50.0')")
        audio = {a.source: a for a in (await studio.state()).switcher.audio}
        assert audio[gz].compressor.enabled and audio[gz].compressor.threshold_db == -50
        reduction = f"document.querySelector('#audio tr[data-source={gz}] [data-reduction=gain]')"
        shown = await wait_true(
            page, f"Number({reduction}.dataset.db) > 20 && {reduction}.dataset.db"
        )
        assert abs(float(shown) - (-12 + 50) * (1 - 1 / 3)) < 2, shown
        # A trim, and the high-pass frequency on its slider of octaves (half way: 141 Hz).
        await page.evaluate(MOVE_SLIDER, [f"#trim-{fs}", -6])
        await page.evaluate(MOVE_SLIDER, [f"#hpf-hz-{fs}", 500])
        await wait_true(
            page, f"document.querySelector('#audio tr[data-source={fs}]').dataset.trim === '-6'"
        )
        hpf = f"document.querySelector('#audio tr[data-strip={fs}] [data-stage=hpf] output')"
        await wait_true(page, f"{hpf}.textContent === '141 Hz'")
        audio = {a.source: a for a in (await studio.state()).switcher.audio}
        assert (audio[fs].trim_db, audio[fs].high_pass.frequency_hz) == (-6, 141)
        assert not audio[fs].high_pass.enabled  # moved, not switched on
        # The program's leveler and limiter beside the master meter.
        assert "Leveler" in await page.inner_text("#audio [data-leveler]")
        assert "Limiter" in await page.inner_text("#audio [data-reduction=limiter]")

        # The program's loudness as monitoring measures it, on the page.
        await wait_true(
            page,
            "/-?[0-9]+\\.[0-9] LUFS/.test("
            "document.querySelector('[data-loudness=integrated]').textContent)",
            15,
        )
        assert console.violations == [] and console.errors == [], console


@pytest.mark.timeout(150)
async def test_the_multiview_plays_over_whep_and_the_mic_talks(tmp_path: Path) -> None:
    if not unshare_works():
        pytest.skip("needs `unshare -n` (a network namespace of its own)")
    done, out = await run_scene("tests.support.control_room_scene", tmp_path / "out.json", 140)
    assert done.returncode == 0 and "error" not in out, (
        out,
        done.stderr.decode(errors="replace")[-3000:],
    )
    # Each tile shows its card: the nearest of the three colours, and near it (H.264 and the
    # browser's colour conversion move saturated colours a little).
    expected = {tile: colours[0] for tile, colours in out["tiles"].items()}
    for tile, (_want, seen) in out["tiles"].items():
        distance = {
            t: max(abs(a - b) for a, b in zip(c, seen, strict=True)) for t, c in expected.items()
        }
        assert min(distance, key=distance.__getitem__) == tile and distance[tile] <= 48, (tile, out)
    assert out["multiview_size"][1] > 0
    assert out["talk_source_online"] is True
    assert out["talk_on"] == [out["station"]] and out["talk_off"] == []
    assert out["talk_source_after_disarm"] is False
    assert out["grant_as_bearer"] == 401
    # The one refusal the scene asked for (a grant used as a bearer here) and nothing else.
    assert out["http_errors"] == [[401, out["http_errors"][0][1]]], out["http_errors"]
    assert out["http_errors"][0][1].endswith("/api/me")
    assert out["violations"] == [], out["violations"]
