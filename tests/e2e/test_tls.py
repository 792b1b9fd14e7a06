"""`baycast up --tls` end to end, with clients that refuse plain connections (issue: TLS on every
edge): aiortc and Chromium publish over HTTPS WHIP, the admin's NATS connection is TLS checked
against the run's CA, frames come back over gRPC with mutual TLS; plain and unauthenticated
clients are refused. The scene runs in a loopback-only namespace (tests/support/tls_scene.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.loopback_scene import run_scene, unshare_works

pytestmark = pytest.mark.timeout(240)


async def test_the_platform_over_tls(tmp_path: Path) -> None:
    if not unshare_works():
        pytest.skip("needs `unshare -n` (root or user namespaces) for a loopback-only browser")
    done, seen = await run_scene("tests.support.tls_scene", tmp_path / "tls.json", timeout=200)
    assert done.returncode == 0 and "error" not in seen, (
        seen.get("error"),
        done.stderr.decode(errors="replace")[-3000:],
    )
    # Every edge is HTTPS and the bus is TLS; stations are given https:// URLs.
    assert seen["edge_schemes"] == ["https"]
    assert seen["nats_scheme"] == "tls"
    assert all(url.startswith("https://") for url in seen["whip_urls"])
    # aiortc over HTTPS WHIP and Chromium on the HTTPS reporter page both went live; their
    # pictures came back over mutual TLS at the size asked for.
    assert seen["aiortc_frames"] == [[320, 180]] * 10
    assert seen["chromium_status"].startswith("You are live")
    assert seen["chromium_frames"] == [[320, 180]] * 5
    # Refused: HTTPS without the CA, a wrong token (as over plain HTTP), NATS without TLS, gRPC
    # without TLS or without a client certificate the CA signed.
    assert seen["https_without_ca"] == "SSLCertVerificationError"
    assert seen["https_wrong_token"] == 401
    assert seen["plain_nats"] == "closed"  # no PONG: the server waited for a TLS handshake
    assert seen["grpc_plain"] == "UNAVAILABLE"
    assert seen["grpc_without_client_cert"] == "UNAVAILABLE"
    assert seen["grpc_with_client_cert"] == "OK"
    # Stopped cleanly. The only error lines in any process's log (nats-server's included) are
    # ingest's gRPC server refusing the two handshakes above, once each.
    assert seen["up_exit"] == 0
    refusals = [line for line in seen["log_errors"] if "Handshake failed" in line]
    assert [line.rsplit(":", 2)[-2].split()[-1] for line in refusals] == [
        "WRONG_VERSION_NUMBER",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ]
    assert all(line.lstrip().startswith("ingest │") for line in refusals)
    assert [line for line in seen["log_errors"] if line not in refusals] == []
