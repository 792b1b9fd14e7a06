"""A real browser (Debian's Chromium, driven by Playwright) logs in from the director's link.

The token arrives in the link's fragment, the login page posts it and leaves the fragment out of
the address bar, the session cookie is one a page's scripts cannot read, and the page's own
requests need the session's CSRF token: all under the service's Content-Security-Policy (no
violation reported by the browser).
"""

from __future__ import annotations

import asyncio
import tempfile
from typing import Any

from playwright.async_api import async_playwright

from services.control.service import ControlService
from tests.integration.control.conftest import AddOperator, Show, base_url

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


async def test_a_browser_logs_in_from_the_link_and_commands_with_its_csrf_token(
    control: ControlService, show: Show, add_operator: AddOperator
) -> None:
    operator, token = await add_operator("director", "导演")
    url = base_url(control)
    violations: list[str] = []
    async with async_playwright() as pw:
        with tempfile.TemporaryDirectory(prefix="baycast-chromium-") as profile:
            browser = await pw.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=ARGS, headless=True
            )
            try:
                page = await browser.new_page()
                page.on(
                    "console",
                    lambda m: (
                        violations.append(m.text) if "Content Security Policy" in m.text else None
                    ),
                )
                await page.goto(f"{url}/login#token={token}")
                for _ in range(100):
                    if page.url == f"{url}/":
                        break
                    await asyncio.sleep(0.05)
                assert page.url == f"{url}/"  # logged in, the token out of the address bar
                assert "control room" in await page.inner_text("h1")
                assert await page.evaluate("document.cookie") == ""  # HttpOnly

                me: dict[str, Any] = await page.evaluate("fetch('/api/me').then((r) => r.json())")
                assert (me["operator"]["id"], me["via"]) == (operator, "cookie")
                post = """([prod, source, csrf]) => fetch(`/api/productions/${prod}/mixer`, {
                    method: 'POST',
                    headers: csrf ? {'Content-Type': 'application/json', 'X-CSRF-Token': csrf}
                                  : {'Content-Type': 'application/json'},
                    body: JSON.stringify({cut: {source}}),
                }).then((r) => r.status)"""
                sz = show.sources[1]
                assert await page.evaluate(post, [show.id, sz, ""]) == 403
                assert await page.evaluate(post, [show.id, sz, me["csrfToken"]]) == 200
                history = await page.evaluate("history.length")
                assert history <= 2
                assert violations == []

                # Inline code is refused: an injected handler never runs, the browser says why.
                await page.evaluate(
                    """document.body.insertAdjacentHTML('beforeend',
                        '<img src="/nothing.png" onerror="window.injected = 1">')"""
                )
                for _ in range(100):
                    if violations:
                        break
                    await asyncio.sleep(0.05)
                assert await page.evaluate("window.injected") is None
            finally:
                await browser.close()
    assert len(violations) == 1 and "inline event handler" in violations[0]
