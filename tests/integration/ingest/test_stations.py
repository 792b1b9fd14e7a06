"""Stations over NATS and `baycast ctl`: only a hash is stored; no token in logs or metrics."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import nats
import pytest

from services.common import errors, ice
from services.common.bus import Bus
from services.common.gen.baycast.v1 import ingest_pb2
from services.station.publisher import PublishRefused, WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import CardVideoTrack, ToneAudioTrack
from tests.support.nats import NatsServer
from tests.support.services import service_process
from tests.support.station import STATION_COMMANDS

pytestmark = pytest.mark.timeout(90)


def ctl(nats_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "ctl", "--nats", nats_url, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "BAYCAST_LOG_FORMAT": "json"},
    )


def read_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


async def command(bus: Bus, **verb: object) -> ingest_pb2.StationReply:
    return await bus.request(
        STATION_COMMANDS,
        ingest_pb2.StationCommand(**verb),
        ingest_pb2.StationReply,  # type: ignore[arg-type]
    )


async def test_station_lifecycle_keeps_tokens_secret(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    sid = f"st-{uuid.uuid4().hex[:6]}"
    proc = service_process(
        "ingest", nats_server.url, tmp_path, "ingest", env={"BAYCAST_LOG_LEVEL": "debug"}
    ).start()
    bus = Bus(nats_server.url, "test-stations")
    await bus.connect()
    tokens: list[str] = []
    try:
        # `baycast ctl station add` prints the URL and the token once.
        out = ctl(nats_server.url, "station", "add", sid, "--name", "广州台")
        assert out.returncode == 0, out.stderr
        lines = dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())
        assert lines["WHIP"].endswith(f"/whip/{sid}")
        token = lines["token"].strip()
        tokens.append(token)
        assert len(token) >= 40

        again = ctl(nats_server.url, "station", "add", sid, "--name", "x")
        assert again.returncode == 2 and "ALREADY_EXISTS" in again.stderr

        listed = ctl(nats_server.url, "station", "list")
        assert listed.returncode == 0 and sid in listed.stdout and "广州台" in listed.stdout
        assert token not in listed.stdout

        # The bucket holds the salted hash only.
        nc = await nats.connect(nats_server.url)
        raw = (await (await nc.jetstream().key_value("stations")).get(sid)).value or b""
        await nc.close()
        assert token.encode() not in raw
        stored = (await command(bus, show=ingest_pb2.StationRef(id=sid))).stations[0]
        assert stored.name == "广州台" and not stored.revoked
        kv = await bus.kv("stations", ingest_pb2.Station)
        entry = await kv.get(sid)
        assert entry is not None
        assert (
            entry.value.token_sha256
            == hashlib.sha256(bytes.fromhex(entry.value.token_salt) + token.encode()).hexdigest()
        )

        # The token publishes; a wrong one is refused for good.
        ice.configure(("127.0.0.1",))
        card = TestCard(sid, "广州台", 320, 180)
        url = lines["WHIP"].split()[-1].strip()
        url = url.replace(url.split("/whip/")[0], proc.http)

        async def on_air(tok: str) -> WhipPublisher:
            publisher = WhipPublisher(
                url, tok, lambda: [CardVideoTrack(card, 25), ToneAudioTrack(card)]
            )
            stop = asyncio.Event()
            task = asyncio.create_task(publisher.run(stop))
            connected = asyncio.create_task(publisher.connected.wait())
            try:
                await asyncio.wait([connected, task], timeout=20, return_when="FIRST_COMPLETED")
            finally:
                connected.cancel()
                stop.set()
                await asyncio.wait_for(task, 10)  # raises PublishRefused if it was refused
            return publisher

        assert (await on_air(token)).sessions == 1
        with pytest.raises(PublishRefused) as refused:
            await on_air("not-" + token)
        assert refused.value.status == 401

        # Rotate: a new token works, the old one does not.
        rotated = await command(bus, rotate=ingest_pb2.StationRef(id=sid))
        tokens.append(rotated.token)
        assert rotated.token and rotated.token != token
        with pytest.raises(PublishRefused):
            await on_air(token)
        assert (await on_air(rotated.token)).sessions == 1

        # Revoke: nothing works; a refused command changes nothing.
        revoked = await command(bus, revoke=ingest_pb2.StationRef(id=sid))
        assert revoked.stations[0].revoked and not revoked.token
        with pytest.raises(PublishRefused):
            await on_air(rotated.token)
        with pytest.raises(errors.InvalidArgument) as bad:
            await command(bus, add=ingest_pb2.AddStation(id="Bad Id!", name="x"))
        assert bad.value.field == "add.id"
        with pytest.raises(errors.NotFound):
            await command(bus, rotate=ingest_pb2.StationRef(id="no-such-station"))
        assert "no-such-station" not in await kv.keys()

        rotate_cli = ctl(nats_server.url, "station", "rotate", sid)
        assert rotate_cli.returncode == 0 and "token" in rotate_cli.stdout
        tokens.append(rotate_cli.stdout.split("token")[1].split()[0])
        assert ctl(nats_server.url, "station", "revoke", sid).returncode == 0

        metrics_text = await asyncio.to_thread(read_url, proc.http + "/metrics")
        assert 'baycast_ingest_whip_requests_total{method="POST",status="401"}' in metrics_text
    finally:
        await bus.drain()
        proc.stop()
    logs = proc.logs()
    assert "whip_session_started" in logs  # the log did capture the sessions
    for tok in tokens:
        assert tok not in logs
        assert tok not in metrics_text
