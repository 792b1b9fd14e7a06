"""POST /api/media-grant: a page's stand-in for its operator's token at ingest and distribution."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
import structlog

from services.common.bus import Bus
from services.common.credentials import CredentialBook, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2, operators_pb2
from services.control.service import ControlService
from services.control.settings import ControlSettings
from tests.integration.control.conftest import AddOperator, base_url, control_settings, operator_cmd
from tests.support.mixer import unique
from tests.support.nats import NatsServer
from tests.support.services import running_service

SECRET = "a-secret-shared-by-control-ingest-and-distribution"


@pytest.fixture
async def granting(nats_server: NatsServer) -> AsyncIterator[ControlService]:
    async with running_service(
        ControlService,
        ControlSettings,
        nats_server.url,
        **control_settings(media_grant_secret=SECRET, grant_burst=3, grant_rate_per_s=0.5),
    ) as service:
        yield service


async def test_a_grant_is_the_operators_token_elsewhere_and_nothing_here(
    granting: ControlService,
    add_operator: AddOperator,
    bus: Bus,
    http: aiohttp.ClientSession,
) -> None:
    url = base_url(granting)
    operator, token = await add_operator("director", "张导")
    # What ingest and distribution hold: the same secret, the same operators.
    book = await CredentialBook.open(bus, grant_secret=SECRET)
    try:
        with structlog.testing.capture_logs() as logs:
            async with http.post(
                f"{url}/api/media-grant", headers={"Authorization": f"Bearer {token}"}
            ) as response:
                assert response.status == 200
                assert response.headers["Cache-Control"] == "no-store"
                body = await response.json()
        assert set(body) == {"grant", "expiresUs"}
        grant = body["grant"]
        assert grant.startswith(f"g1.{operator}.") and token not in grant
        now_us = time.time_ns() // 1000
        assert now_us + 50_000_000 < body["expiresUs"] <= now_us + 61_000_000
        principal = book.identify(grant)
        assert principal is not None
        assert (principal.kind, principal.id) == ("operator", operator)
        assert grant not in repr(logs) and token not in repr(logs)

        # Not a way into the control room, nor to a session.
        async with http.get(f"{url}/api/me", headers={"Authorization": f"Bearer {grant}"}) as r:
            assert r.status == 401
        async with http.post(f"{url}/api/session", json={"token": grant}) as r:
            assert r.status == 401
        async with http.post(
            f"{url}/api/media-grant", headers={"Authorization": f"Bearer {grant}"}
        ) as r:
            assert r.status == 401

        # A browser: its session cookie, its CSRF token and this origin.
        async with http.post(f"{url}/api/session", json={"token": token}) as r:
            csrf = (await r.json())["csrfToken"]
        async with http.post(f"{url}/api/media-grant") as r:
            assert r.status == 403 and (await r.json())["field"] == "Origin"
        async with http.post(f"{url}/api/media-grant", headers={"Origin": url}) as r:
            assert r.status == 403 and (await r.json())["field"] == "X-CSRF-Token"
        headers = {"Origin": url, "X-CSRF-Token": csrf}
        async with http.post(f"{url}/api/media-grant", headers=headers) as r:
            assert r.status == 200
            from_cookie = (await r.json())["grant"]
        assert book.identify(from_cookie) is not None

        # Limited per operator: a burst of 3 (the fixture's), then 429 with Retry-After.
        async with http.post(f"{url}/api/media-grant", headers=headers) as r:
            assert r.status == 200
        async with http.post(f"{url}/api/media-grant", headers=headers) as r:
            assert r.status == 429 and int(r.headers["Retry-After"]) >= 1

        # A rotated token voids the grants made for the old one.
        await operator_cmd(
            bus,
            operators_pb2.OperatorCommand(rotate=operators_pb2.OperatorRef(id=operator)),
        )
        for _ in range(100):
            if book.identify(grant) is None:
                break
            await asyncio.sleep(0.02)
        assert book.identify(grant) is None and book.identify(from_cookie) is None
    finally:
        await book.close()


async def test_grants_need_an_operator_and_a_secret(
    granting: ControlService,
    nats_server: NatsServer,
    add_operator: AddOperator,
    bus: Bus,
    http: aiohttp.ClientSession,
) -> None:
    url = base_url(granting)
    async with http.post(f"{url}/api/media-grant") as r:
        assert r.status == 401
    station, station_token = with_new_token(ingest_pb2.Station(id=unique("st"), name="广州台"))
    stations = await bus.kv("stations", ingest_pb2.Station)
    await stations.put(station.id, station)
    for _ in range(100):  # the control service's mirror of the bucket catches up
        async with http.post(
            f"{url}/api/media-grant", headers={"Authorization": f"Bearer {station_token}"}
        ) as r:
            if r.status != 401:
                break
        await asyncio.sleep(0.02)
    assert r.status == 403  # a station's token: stations have grants of their own (none)
    _, viewer = await add_operator("viewer")
    headers = {"Authorization": f"Bearer {viewer}"}
    async with http.post(f"{url}/api/media-grant", headers=headers) as r:
        assert r.status == 200  # every operator may watch the multiview

    async with running_service(
        ControlService, ControlSettings, nats_server.url, **control_settings()
    ) as plain:
        async with http.post(f"{base_url(plain)}/api/media-grant", headers=headers) as r:
            assert r.status == 503 and (await r.json())["code"] == "UNAVAILABLE"
        async with http.get(f"{base_url(plain)}/api/me", headers=headers) as r:
            me = await r.json()
        assert me["mediaGrants"] is False and me["ingestUrl"] == ""
    async with http.get(f"{url}/api/me", headers=headers) as r:
        assert (await r.json())["mediaGrants"] is True
