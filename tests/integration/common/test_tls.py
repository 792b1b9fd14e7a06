"""TLS on the HTTP edge (services/common/telemetry.py HttpServer, services/common/tls.py): the HTTPS
listener serves everything, the plain one only probes and metrics; clients check the server
against the CA."""

from __future__ import annotations

import ssl
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.common.telemetry import HttpServer
from services.common.tls import http_connector, server_context
from services.up.local_ca import make_local_tls

pytestmark = pytest.mark.timeout(30)


async def test_https_edge_and_a_plain_port_for_probes_only(tmp_path: Path) -> None:
    tls = make_local_tls(tmp_path / "tls")
    server = HttpServer(
        "127.0.0.1:0",
        registry=CollectorRegistry(),
        https_addr="127.0.0.1:0",
        https_context=server_context(str(tls.cert_file), str(tls.key_file)),
    )

    async def whip(_request: web.Request) -> web.Response:
        return web.Response(status=201, text="answer")

    server.app.router.add_post("/whip/gz", whip)
    server.ready = True
    await server.start()
    try:
        plain = f"http://127.0.0.1:{server.port}"
        secure = f"https://127.0.0.1:{server.https_port}"
        assert server.https_port not in (0, server.port)
        async with aiohttp.ClientSession() as http:
            for path in ("/healthz", "/readyz", "/metrics"):
                async with http.get(plain + path) as resp:
                    assert resp.status == 200, path
            async with http.post(plain + "/whip/gz", headers={"Authorization": "Bearer t"}) as resp:
                assert resp.status == 403
                assert await resp.text() == (
                    "PERMISSION_DENIED: this port serves probes and metrics only; "
                    f"use https on port {server.https_port}\n"
                )
            # Without the CA the server's certificate does not verify.
            with pytest.raises(aiohttp.ClientConnectorCertificateError) as refused:
                await http.get(secure + "/healthz")
            assert isinstance(refused.value.certificate_error, ssl.SSLCertVerificationError)
        async with aiohttp.ClientSession(connector=http_connector(str(tls.ca_file))) as http:
            async with http.post(secure + "/whip/gz") as resp:
                assert (resp.status, await resp.text()) == (201, "answer")
            async with http.get(secure + "/healthz") as resp:
                assert resp.status == 200
            # The certificate names localhost too.
            async with http.get(f"https://localhost:{server.https_port}/healthz") as resp:
                assert resp.status == 200
    finally:
        await server.stop()


async def test_without_https_everything_stays_on_the_plain_port() -> None:
    server = HttpServer("127.0.0.1:0", registry=CollectorRegistry())

    async def whip(_request: web.Request) -> web.Response:
        return web.Response(status=201)

    server.app.router.add_post("/whip/gz", whip)
    await server.start()
    try:
        assert server.https_port == 0
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"http://127.0.0.1:{server.port}/whip/gz") as resp,
        ):
            assert resp.status == 201
    finally:
        await server.stop()
