"""Browser sessions: the cookie, CSRF tokens bound to the session, our origin, logout, limits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
import pytest

from services.common.bus import Bus
from services.common.credentials import with_new_token
from services.common.gen.baycast.v1 import ingest_pb2, mixer_pb2, operators_pb2
from services.control.access import CSRF_HEADER, SESSION_COOKIE
from services.control.service import ControlService
from services.control.settings import ControlSettings
from tests.integration.control.conftest import (
    AddOperator,
    Show,
    base_url,
    control_settings,
    operator_cmd,
)
from tests.support.mixer import command, unique
from tests.support.nats import NatsServer
from tests.support.services import running_service

Cmd = mixer_pb2.MixerCommand


@pytest.fixture
async def proxied(nats_server: NatsServer) -> AsyncIterator[ControlService]:
    """The control service behind a (trusted) reverse proxy."""
    async with running_service(
        ControlService, ControlSettings, nats_server.url, **control_settings(trust_proxy=True)
    ) as service:
        yield service


async def login(
    http: aiohttp.ClientSession, url: str, token: str, headers: dict[str, str] | None = None
) -> tuple[int, Any, SimpleCookie]:
    async with http.post(f"{url}/api/session", json={"token": token}, headers=headers) as response:
        cookie: SimpleCookie = SimpleCookie()
        for header in response.headers.getall("Set-Cookie", []):
            cookie.load(header)
        return response.status, await response.json(), cookie


async def test_cookie_login_csrf_origin_and_logout(
    bus: Bus, proxied: ControlService, show: Show, add_operator: AddOperator
) -> None:
    operator, token = await add_operator("director", "张导")
    url = base_url(proxied)
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        status, session, cookie = await login(browser, url, token)
        assert status == 200 and session["operator"]["id"] == operator
        csrf = session["csrfToken"]
        morsel = cookie[SESSION_COOKIE]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/"
        assert not morsel["secure"]  # plain HTTP here
        assert token not in morsel.value and csrf != morsel.value

        async with browser.get(f"{url}/api/me") as response:
            me = await response.json()
        assert (me["via"], me["csrfToken"], me["operator"]["name"]) == ("cookie", csrf, "张导")

        mixer_url = f"{url}/api/productions/{show.id}/mixer"
        sz = show.sources[1]
        before = (await command(bus, show.id, Cmd(get=Cmd.Get()))).switcher
        refusals = {
            "no CSRF token": {"Origin": url},
            "a wrong CSRF token": {"Origin": url, CSRF_HEADER: csrf[::-1]},
            "a foreign Origin": {"Origin": "http://evil.example", CSRF_HEADER: csrf},
            "no Origin": {CSRF_HEADER: csrf},
        }
        for why, headers in refusals.items():
            async with browser.post(mixer_url, json={"cut": {"source": sz}}, headers=headers) as r:
                error = await r.json()
            assert r.status == 403 and error["code"] == "PERMISSION_DENIED", why
            assert error["field"] in (CSRF_HEADER, "Origin"), why
        assert (await command(bus, show.id, Cmd(get=Cmd.Get()))).switcher == before

        # A second session of the same operator: its CSRF token does not fit the first.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
            _, second, _ = await login(other, url, token)
        headers = {"Origin": url, CSRF_HEADER: second["csrfToken"]}
        async with browser.post(mixer_url, json={"cut": {"source": sz}}, headers=headers) as r:
            assert r.status == 403

        headers = {"Origin": url, CSRF_HEADER: csrf}
        async with browser.post(mixer_url, json={"cut": {"source": sz}}, headers=headers) as r:
            assert r.status == 200 and (await r.json())["switcher"]["program"] == sz

        # Behind the proxy the origin is the public one.
        public = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "control.baycast.example"}
        forged = {**public, "Origin": url, CSRF_HEADER: csrf}
        async with browser.post(mixer_url, json={"get": {}}, headers=forged) as r:
            assert r.status == 403
        honest = {**public, "Origin": "https://control.baycast.example", CSRF_HEADER: csrf}
        async with browser.post(mixer_url, json={"get": {}}, headers=honest) as r:
            assert r.status == 200

        async with browser.delete(f"{url}/api/session", headers={"Origin": url}) as r:
            assert r.status == 403  # logging out changes state: the CSRF token too
        async with browser.delete(
            f"{url}/api/session", headers={"Origin": url, CSRF_HEADER: csrf}
        ) as r:
            assert r.status == 204
        async with browser.get(f"{url}/api/me") as r:
            assert r.status == 401


async def test_login_cookie_over_https_foreign_logins_and_stations(
    bus: Bus, proxied: ControlService, add_operator: AddOperator, http: aiohttp.ClientSession
) -> None:
    _, token = await add_operator("graphics")
    url = base_url(proxied)
    secure = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.20"}
    status, _, cookie = await login(http, url, token, secure)
    assert status == 200 and cookie[SESSION_COOKIE]["secure"]
    assert "Strict-Transport-Security" in (await _headers(http, f"{url}/login", secure))

    status, error, _ = await login(http, url, token, {"Origin": "http://evil.example"})
    assert status == 403 and error["field"] == "Origin"

    station, station_token = with_new_token(ingest_pb2.Station(id=unique("st"), name="广州台"))
    stations = await bus.kv("stations", ingest_pb2.Station)
    await stations.put(station.id, station)
    for _ in range(40):  # the mirror follows the bucket
        status, error, _ = await login(http, url, station_token)
        if status == 403:
            break
        await asyncio.sleep(0.05)
    assert (status, error["code"]) == (403, "PERMISSION_DENIED")
    async with http.get(f"{url}/api/me", headers={"Authorization": f"Bearer {station_token}"}) as r:
        assert r.status == 403

    for body in ({"token": ""}, {"token": 5}, {"token": token, "extra": 1}, ["x"]):
        async with http.post(f"{url}/api/session", json=body) as r:
            assert r.status == 400, body
    async with http.post(f"{url}/api/session", data=token) as r:
        assert r.status == 415


async def _headers(http: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> Any:
    async with http.get(url, headers=headers) as response:
        return response.headers


async def test_logins_are_limited_per_address(
    proxied: ControlService, http: aiohttp.ClientSession
) -> None:
    url = base_url(proxied)
    address = {"X-Forwarded-For": "203.0.113.9"}
    statuses = [(await login(http, url, f"guess-{i}", address))[0] for i in range(11)]
    assert statuses == [401] * 10 + [429]
    async with http.post(f"{url}/api/session", json={"token": "x"}, headers=address) as r:
        assert r.status == 429 and int(r.headers["Retry-After"]) >= 1
    # Another address is not held back.
    status, _, _ = await login(http, url, "guess", {"X-Forwarded-For": "203.0.113.10"})
    assert status == 401


async def test_a_rotated_token_ends_its_sessions_within_2_s(
    bus: Bus, control: ControlService, add_operator: AddOperator
) -> None:
    operator, token = await add_operator("audio")
    url = base_url(control)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        status, _, _ = await login(browser, url, token)
        assert status == 200
        async with browser.get(f"{url}/api/me") as r:
            assert r.status == 200
        await operator_cmd(
            bus, operators_pb2.OperatorCommand(rotate=operators_pb2.OperatorRef(id=operator))
        )
        started = time.monotonic()
        while True:
            async with browser.get(f"{url}/api/me") as r:
                if r.status == 401:
                    break
            assert time.monotonic() - started < 2.0, "the session outlived its token"
            await asyncio.sleep(0.05)
