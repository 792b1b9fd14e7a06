"""`baycast up --tls` with clients that refuse plain connections; run in a loopback-only namespace.

    unshare -n sh -c 'ip link set lo up && exec python -m tests.support.tls_scene OUT.json'

The platform runs as `make run` runs it, with `--tls` and no demo. Against it: the admin's NATS
connection over TLS (checked against the run's CA), a station published from aiortc over HTTPS
WHIP, the reporter page in headless Chromium (which trusts only the run's server key), and the
station's frames read back over gRPC with mutual TLS. Then what plain or unauthenticated clients
get. What it saw goes to OUT.json for the test outside to check.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from playwright.async_api import async_playwright

from services.common import ice
from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import ingest_pb2, media_pb2
from services.common.handles import HandleDirectory
from services.common.rpc import ChannelCache
from services.common.tls import InternalTls, http_connector
from services.station.publisher import WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import CardLoop
from tests.support.loopback_scene import scene_main
from tests.support.processes import alive, children_of
from tests.support.reporter_browser import CHROMIUM, CHROMIUM_ARGS, body_state, wait_true

REPO = Path(__file__).resolve().parents[2]
STATIONS = {"tls-gz": "广州台", "tls-bj": "北京记者"}
SIZE = (320, 180)


def spki_pin(cert_file: Path) -> str:
    """Chromium's `--ignore-certificate-errors-spki-list` form of the server key: base64 of the
    SHA-256 of its SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


async def wait_endpoints(state: Path, proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    path = state / "endpoints.json"
    for _ in range(900):
        if proc.poll() is not None:
            raise RuntimeError(f"baycast up exited with {proc.returncode}")
        if path.exists():
            data: dict[str, Any] = json.loads(path.read_text())
            if "services" in data:
                return data
        await asyncio.sleep(0.1)
    raise TimeoutError("baycast up --tls did not come up in 90 s")


async def frames_over_mutual_tls(
    bus: Bus, tls: InternalTls, station: str, count: int
) -> list[tuple[int, int]]:
    """`count` video frames of the station's source, over gRPC with our client certificate."""
    channels = ChannelCache(tls.grpc_channel_credentials())
    sizes: list[tuple[int, int]] = []
    try:
        rendition = media_pb2.Rendition(width=SIZE[0], height=SIZE[1], no_audio=True)
        async with asyncio.timeout(20):
            async for frame in HandleDirectory(bus).frames(
                channels, f"source/{station}", rendition, subscriber="tls-scene"
            ):
                if frame.HasField("video"):
                    sizes.append((frame.video.width, frame.video.height))
                    if len(sizes) >= count:
                        break
    finally:
        await channels.close()
    return sizes


async def grpc_refusal(endpoint: str, credentials: grpc.ChannelCredentials | None) -> str:
    """What a health check gets through `credentials` (None: a plain channel)."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(endpoint)
    else:
        channel = grpc.aio.secure_channel(
            endpoint, credentials, options=[("grpc.ssl_target_name_override", "baycast.internal")]
        )
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return "OK"
    except grpc.aio.AioRpcError as exc:
        return exc.code().name
    finally:
        await channel.close()


async def plain_nats(port: int) -> str:
    """A client that speaks NATS without TLS: what the server answers its CONNECT and PING
    before it closes the connection ("closed": nothing)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        info = await reader.readline()
        assert info.startswith(b"INFO "), info
        writer.write(b'CONNECT {"verbose":false}\r\nPING\r\n')
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # to the server's close
        return answer.decode().strip() or "closed"
    finally:
        writer.close()


def start_up(state: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "services.cli", "up", "--tls", "--no-demo"]
    return subprocess.Popen(
        [*argv, "--state-dir", str(state)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def ca_only(tls: InternalTls) -> grpc.ChannelCredentials:
    """TLS that checks the server but has no client certificate to show."""
    return grpc.ssl_channel_credentials(Path(tls.ca_file).read_bytes())


async def drive(out: dict[str, Any], _result: Path) -> None:
    ice.configure(("127.0.0.1",))  # the namespace's only interface
    with tempfile.TemporaryDirectory(prefix="baycast-tls-") as tmp:
        state = Path(tmp) / "state"
        proc = start_up(state)
        try:
            await check(out, state, await wait_endpoints(state, proc))
        finally:
            children = children_of(proc.pid)
            proc.send_signal(signal.SIGINT)
            try:
                log, _ = await asyncio.to_thread(proc.communicate, timeout=40)
            except subprocess.TimeoutExpired:
                for pid in [proc.pid, *children]:
                    if alive(pid):
                        os.killpg(pid, signal.SIGKILL)
                log, _ = proc.communicate()
            out["up_exit"] = proc.returncode
            text = log.decode(errors="replace")
            out["log_errors"] = [
                line for line in text.splitlines() if "[ERR]" in line or "error " in line
            ]


async def check(out: dict[str, Any], state: Path, endpoints: dict[str, Any]) -> None:
    files = endpoints["tls"]
    tls = InternalTls(files["ca_file"], files["cert_file"], files["key_file"])
    services = endpoints["services"]
    ingest = services["ingest"]["http"]
    out["edge_schemes"] = sorted({s["http"].split(":", 1)[0] for s in services.values()})
    out["nats_scheme"] = endpoints["nats"].split(":", 1)[0]

    bus = Bus(endpoints["nats"], "tls-scene", tls=tls.nats_context())
    await asyncio.wait_for(bus.connect(), 20)
    try:
        tokens = {}
        for station, name in STATIONS.items():
            add = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=station, name=name))
            reply = await bus.request(
                subject("ingest", "station", "cmd"), add, ingest_pb2.StationReply
            )
            tokens[station] = reply.token
            out.setdefault("whip_urls", []).append(reply.stations[0].whip_url)

        # aiortc over HTTPS WHIP, trusting the run's CA.
        card = TestCard("tls-gz", STATIONS["tls-gz"], *SIZE)
        loop = await asyncio.to_thread(CardLoop.encode, card, 25)
        publisher = WhipPublisher(
            f"{ingest}/whip/tls-gz",
            tokens["tls-gz"],
            loop.tracks,
            h264_only=True,
            ca_file=tls.ca_file,
        )
        stop = asyncio.Event()
        publishing = asyncio.create_task(publisher.run(stop))
        try:
            await asyncio.wait_for(publisher.connected.wait(), 20)
            out["aiortc_frames"] = await frames_over_mutual_tls(bus, tls, "tls-gz", 10)
        finally:
            stop.set()
            await publishing

        # Chromium: the reporter page over HTTPS, trusting only this run's server key.
        pin = spki_pin(Path(tls.cert_file))
        async with async_playwright() as pw:
            with tempfile.TemporaryDirectory(prefix="baycast-chromium-") as profile:
                browser = await pw.chromium.launch_persistent_context(
                    profile,
                    executable_path=CHROMIUM,
                    args=[*CHROMIUM_ARGS, f"--ignore-certificate-errors-spki-list={pin}"],
                    headless=True,
                )
                try:
                    page = await browser.new_page()
                    await page.goto(f"{ingest}/contribute/tls-bj")
                    await wait_true(page, "document.querySelector('#preview').readyState >= 2")
                    await page.fill("#token", tokens["tls-bj"])
                    await page.click("#go")
                    await body_state(page, "live")
                    out["chromium_status"] = await page.inner_text("#status")
                    out["chromium_frames"] = await frames_over_mutual_tls(bus, tls, "tls-bj", 5)
                    await page.click("#stop")
                    await body_state(page, "stopped")
                finally:
                    await browser.close()

        # What clients without TLS, or without the CA, or without a client certificate get.
        async with aiohttp.ClientSession() as http:
            try:
                async with http.get(f"{ingest}/healthz"):
                    out["https_without_ca"] = "answered"
            except aiohttp.ClientConnectorCertificateError as exc:
                out["https_without_ca"] = type(exc.certificate_error).__name__
        async with (
            aiohttp.ClientSession(connector=http_connector(tls.ca_file)) as http,
            http.post(
                f"{ingest}/whip/tls-gz",
                data="v=0\r\n",
                headers={"Content-Type": "application/sdp", "Authorization": "Bearer wrong"},
            ) as resp,
        ):
            out["https_wrong_token"] = resp.status
        nats_port = int(endpoints["nats"].rsplit(":", 1)[1])
        out["plain_nats"] = await plain_nats(nats_port)
        grpc_endpoint = services["ingest"]["grpc"]
        out["grpc_plain"] = await grpc_refusal(grpc_endpoint, None)
        out["grpc_without_client_cert"] = await grpc_refusal(grpc_endpoint, ca_only(tls))
        out["grpc_with_client_cert"] = await grpc_refusal(
            grpc_endpoint, tls.grpc_channel_credentials()
        )
    finally:
        await bus.drain()


if __name__ == "__main__":
    scene_main(drive, timeout=170)
