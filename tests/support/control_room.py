"""The control room's pages under test: a studio of real services and a real browser on them.

    async with running_studio(nats_url) as studio:          # cards, mixer, graphics, monitoring,
        async with chromium() as browser:                    # control; headless Chromium
            page = await log_in(browser, studio, token)
            await page.click("#switcher [data-bus=preview][data-source=...]")
            await studio.program_shows(studio.colour(source))

The studio's production has three cards of known colours and tones (`tests/support/mixer.py`);
the program is read over gRPC, as the mixer's own tests read it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from playwright.async_api import Browser, Page, ViewportSize, async_playwright
from playwright.async_api import Error as PlaywrightError

from services.common.bus import Bus
from services.common.gen.baycast.v1 import media_pb2, mixer_pb2, operators_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_i420
from services.control.service import ControlService
from services.control.settings import ControlSettings
from services.graphics.service import GraphicsService
from services.graphics.settings import GraphicsSettings
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from services.mixer.settings import MixerSettings
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.support.media_source import Card, FakeMediaServer
from tests.support.mixer import admin, cards, command, frames, production, unique, yuv_at
from tests.support.services import running_service

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
]
# A laptop in a control room (the pages must work there).
VIEWPORT = ViewportSize(width=1366, height=768)
# The program is read small: enough to see colours, cheap to move.
SMALL = media_pb2.Rendition(width=320, height=180, no_audio=True)
ROLES = {
    "director": operators_pb2.ROLE_DIRECTOR,
    "graphics": operators_pb2.ROLE_GRAPHICS,
    "audio": operators_pb2.ROLE_AUDIO,
    "viewer": operators_pb2.ROLE_VIEWER,
}

Yuv = tuple[int, int, int]


@dataclass
class Studio:
    bus: Bus
    mixer: MixerService
    control: ControlService
    graphics: GraphicsService
    production: mixer_pb2.Production
    cards: dict[str, Card]  # source id -> its card

    @property
    def id(self) -> str:
        return self.production.id

    @property
    def sources(self) -> list[str]:
        return [s.id for s in self.production.sources]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.control.http.port}"

    def colour(self, source: str) -> Yuv:
        return self.cards[source].yuv

    async def add_operator(self, role: str, name: str = "") -> tuple[str, str]:
        """A new operator with `role`: (id, token)."""
        operator_id = unique(role)
        reply = await self.bus.request(
            "baycast.v1.operator.cmd",
            operators_pb2.OperatorCommand(
                add=operators_pb2.AddOperator(
                    id=operator_id, name=name or operator_id, role=ROLES[role]
                )
            ),
            operators_pb2.OperatorReply,
        )
        return operator_id, reply.token

    async def revoke(self, operator_id: str) -> None:
        await self.bus.request(
            "baycast.v1.operator.cmd",
            operators_pb2.OperatorCommand(revoke=operators_pb2.OperatorRef(id=operator_id)),
            operators_pb2.OperatorReply,
        )

    async def switch(self, cmd: mixer_pb2.MixerCommand) -> mixer_pb2.MixerState:
        """A command as `baycast ctl` sends it (the bus, not the control room)."""
        return await command(self.bus, self.id, cmd)

    async def state(self) -> mixer_pb2.MixerState:
        return await self.switch(mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get()))

    async def program_frame(
        self,
        accept: Callable[[np.ndarray], bool],
        timeout: float = 10.0,
        rendition: media_pb2.Rendition = SMALL,
    ) -> np.ndarray:
        """The first program frame (I420, 320×180 unless asked) that `accept`s; TimeoutError if
        none does."""
        endpoint = self.mixer.grpc_endpoint

        async def first() -> np.ndarray:
            async for message in frames(endpoint, f"prod/{self.id}/program", rendition):
                if message.WhichOneof("body") != "video":
                    continue
                image = proto_to_i420(message.video)
                if accept(image):
                    return image
            raise AssertionError("the program stream ended")

        return await asyncio.wait_for(first(), timeout)

    async def program_shows(self, yuv: tuple[float, ...], tolerance: float = 3.0) -> np.ndarray:
        """Waits for a program frame whose centre is `yuv` (within `tolerance`)."""
        return await self.program_frame(lambda image: near(centre(image), yuv, tolerance))


def centre(image: np.ndarray) -> Yuv:
    return yuv_at(image, 160, 90)


def near(a: tuple[float, ...], b: tuple[float, ...], tolerance: float = 3.0) -> bool:
    return all(abs(p - q) <= tolerance for p, q in zip(a, b, strict=True))


@contextlib.asynccontextmanager
async def running_studio(nats_url: str, **control: Any) -> AsyncIterator[Studio]:
    """Three cards, the mixer running a production of them, graphics, monitoring and the
    control service (`control` overrides its settings)."""
    bus = Bus(nats_url, "control-room-test")
    await bus.connect()
    media = await FakeMediaServer().start()
    prod_id = unique("room")
    card_list = [media.add(c) for c in cards(prod_id, 3)]
    await media.announce(HandleDirectory(bus))
    # The plain mix: the audio page's faders are checked by the tones' levels, which the
    # loudness control (tests/integration/mixer/test_loudness.py) would level.
    spec = production(prod_id, card_list, loudness=mixer_pb2.Loudness(enabled=False))
    quick = {"unready_seconds": 0.0, "drain_seconds": 3.0}
    try:
        async with contextlib.AsyncExitStack() as stack:
            mixer = await stack.enter_async_context(
                running_service(
                    MixerService, MixerSettings, nats_url, lease_renew_seconds=0.3, **quick
                )
            )
            graphics = await stack.enter_async_context(
                running_service(GraphicsService, GraphicsSettings, nats_url, **quick)
            )
            await stack.enter_async_context(
                running_service(MonitoringService, MonitoringSettings, nats_url, **quick)
            )
            control_service = await stack.enter_async_context(
                running_service(ControlService, ControlSettings, nats_url, **quick, **control)
            )
            await admin(bus, mixer_pb2.ProductionCommand(create=spec))
            await command(bus, prod_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get()))
            cards_by_source = {
                source.id: card for source, card in zip(spec.sources, card_list, strict=True)
            }
            try:
                yield Studio(bus, mixer, control_service, graphics, spec, cards_by_source)
            finally:
                store = await ProductionStore.open(bus)
                with contextlib.suppress(Exception):
                    await store.delete(prod_id)
    finally:
        for card in media.cards.values():
            card.ended = True
        await media.stop()
        await bus.drain()


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """Headless Debian Chromium; each `new_context()` is a browser profile of its own."""
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="baycast-chromium-"):
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield browser
            finally:
                await browser.close()


@dataclass
class Console:
    """What a page said that a test cares about: CSP violations, errors, failed requests."""

    violations: list[str]
    errors: list[str]
    http_errors: list[tuple[int, str]]


async def open_page(browser: Browser) -> tuple[Page, Console]:
    context = await browser.new_context(viewport=VIEWPORT)
    page = await context.new_page()
    console = Console([], [], [])
    page.on(
        "console",
        lambda m: (
            console.violations.append(m.text)
            if "Content Security Policy" in m.text
            else console.errors.append(m.text)
            if m.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda exc: console.errors.append(str(exc)))
    page.on(
        "response",
        lambda r: console.http_errors.append((r.status, r.url)) if r.status >= 400 else None,
    )
    return page, console


async def log_in(browser: Browser, studio: Studio, token: str) -> tuple[Page, Console]:
    """A page of a fresh profile, logged in from the login link, showing the production."""
    page, console = await open_page(browser)
    await page.goto(f"{studio.url}/login#token={token}")
    await wait_true(page, f"location.href === {json.dumps(studio.url + '/')}", 10)
    await wait_true(page, "document.body.dataset.connection === 'live'", 15)
    return page, console


async def wait_true(page: Page, expression: str, timeout_s: float = 10.0) -> Any:
    """Poll `expression` with `page.evaluate` (wait_for_function would need the page's CSP to
    allow string evaluation, which it rightly does not). A page being replaced, or an element
    the expression reads that is not rendered yet (a tab just clicked renders on the next frame),
    is asked again."""
    error = ""
    for _ in range(int(timeout_s / 0.05)):
        try:
            value = await page.evaluate(expression)
        except PlaywrightError as exc:
            if "navigation" not in str(exc) and "of null" not in str(exc):
                raise
            value, error = None, str(exc).splitlines()[0]
        if value:
            return value
        await asyncio.sleep(0.05)
    said = await page.evaluate(
        "[location.href, JSON.stringify(document.body.dataset),"
        " document.querySelector('.toasts')?.textContent]"
    )
    raise TimeoutError(
        f"{expression} still false after {timeout_s} s ({error or 'no error'}); the page: {said}"
    )


# The page's own fetch with its session's CSRF token, as a script on the page would send it.
POST_COMMAND = """async ([prod, service, body]) => {
  const me = await (await fetch('/api/me')).json();
  const response = await fetch(`/api/productions/${prod}/${service}`, {
    method: 'POST',
    headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrfToken},
    body: JSON.stringify(body),
  });
  return [response.status, await response.json()];
}"""
