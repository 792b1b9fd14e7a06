"""Item 28: during a show no secret shows, in `ps` or in any log line, nor in clear in a bucket.

The show: a station contributes over SRT (Debian's ffmpeg as its encoder, its passphrase given
through a preset pipe as the platform's relays do) to an ingest process; a mixer process puts it
on program; a distribution process pushes the program to three destinations at once: RTMP and
RTMPS to nginx-rtmp (each with its own stream key) and SRT to an encrypted listener (libsrt in
this process, so its passphrase is in no command line). Every service runs as its own NATS user.

While every push is live (nginx counts each publisher, the SRT listener's byte count grows, the
station's source is online), the test samples every process's command line (`ps -eo args`, all
users' processes) several times and reads each relay's log and environment through /proc; after
the show it collects every log line of every process the platform ran (the three services,
nats-server, the relays, the station's encoder) and reads the raw `dist_outputs` values as a
superuser. None of it may hold a stream key, a passphrase, the station's token, a NATS password,
the platform's SRT secret or the secrets key. What arrived is decoded: the pushes are real.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.nats_accounts import USERS, generate_passwords, user_url
from services.distribution.keyring import PREFIX, write_new_key_file
from tests.reliability.helpers import (
    PUSH_HEIGHT,
    PUSH_WIDTH,
    add_station,
    create_production,
    delete_production,
    distribution_process,
    ingest_process,
    mixer_command,
    mixer_process,
    processes,
    source_online,
)
from tests.support.ffmpeg_push import encoder_args
from tests.support.nats import INSPECTOR, NatsServer, config_with_inspector, free_port
from tests.support.rtmp import RtmpServer, RtmpsFront, probe
from tests.support.secret_scan import Leak, find_secrets, process_list
from tests.support.srt_receiver import SrtReceiver

pytestmark = pytest.mark.timeout(120)

SAMPLES = 6
SAMPLE_EVERY_S = 0.7
LIVE = dist.OUTPUT_STATUS_LIVE


def test_the_scan_finds_a_planted_secret() -> None:
    """The search below is shown to find what it looks for: a key in a command line, a
    passphrase in a log line, a token percent-encoded in a URL and in base64 in a header."""
    key, passphrase, token = "live-" + secrets.token_hex(8), secrets.token_hex(12), "a/b+c=d&e"
    ps = (
        f"  101     1 /usr/bin/ffmpeg -f flv rtmp://127.0.0.1:1935/live/{key}\n"
        "  102     1 /usr/bin/ffmpeg -f flv -fpre /dev/fd/5 rtmp://127.0.0.1:1935\n"
    )
    log = json.dumps({"event": "srt", "url": f"srt://h:9000?passphrase={passphrase}"}) + "\n"
    log += "GET /x?token=a%2Fb%2Bc%3Dd%26e\nAuthorization: Basic YS9iK2M9ZCZl\nnothing here\n"
    secret_values = {"stream key": key, "passphrase": passphrase, "station token": token}
    leaks = find_secrets({"ps": ps, "ingest.log": log}, secret_values)
    assert [(leak.where, leak.secret, leak.line) for leak in leaks] == [
        (
            "ps",
            "stream key",
            "  101     1 /usr/bin/ffmpeg -f flv rtmp://127.0.0.1:1935/live/<stream key>",
        ),
        (
            "ingest.log",
            "passphrase",
            '{"event": "srt", "url": "srt://h:9000?passphrase=<passphrase>"}',
        ),
        ("ingest.log", "station token", "GET /x?token=<station token>"),
        ("ingest.log", "station token", "Authorization: Basic <station token>"),
    ]
    assert all(value not in str(leak) for leak in leaks for value in secret_values.values())
    with pytest.raises(ValueError, match="too short"):
        find_secrets({}, {"short": "abc"})


def relay_pids(ps: str, parent: int) -> list[int]:
    """The ffmpeg children of `parent` in a `pid ppid args` list."""
    pids = []
    for line in ps.splitlines():
        fields = line.split(None, 2)
        if len(fields) == 3 and fields[1] == str(parent) and "ffmpeg" in fields[2].split()[0]:
            pids.append(int(fields[0]))
    return pids


def read_proc(pid: int, name: str) -> str:
    """A file of /proc/<pid> (a relay's stderr through fd/2: its log; its environment)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/{name}", "rb") as f:
        return f.read().decode(errors="replace").replace("\0", "\n")
    return ""


def srt_caller(
    station_url: str, passphrase: str, log: Path, seconds: float
) -> subprocess.Popen[bytes]:
    """The station's encoder: a test pattern and tone over SRT, its passphrase through a preset
    pipe (`-fpre /dev/fd/N`), never in its arguments."""
    read_end, write_end = os.pipe()
    os.write(write_end, f"passphrase={passphrase}\npbkeylen=16\n".encode())
    os.close(write_end)
    argv = [*encoder_args(seconds), "-f", "mpegts", "-fpre", f"/dev/fd/{read_end}", station_url]
    try:
        with open(log, "ab") as err:
            return subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                pass_fds=(read_end,),
            )  # fmt: skip
    finally:
        os.close(read_end)


def srt_address(ingest_http: str, station: str, token: str) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{ingest_http}/srt/{station}", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


@contextlib.contextmanager
def stopping(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def test_no_secret_in_ps_logs_or_buckets_during_a_show(tmp_path: Path) -> None:
    started = time.monotonic()
    tag = secrets.token_hex(3)
    prod, station = f"sec-{tag}", f"sec-st-{tag}"
    passwords = generate_passwords((*USERS, INSPECTOR))
    config = tmp_path / "nats.conf"
    config.write_text(config_with_inspector(passwords))
    nats_server = NatsServer(port=free_port(), config=str(config)).start()
    urls = {user: user_url(nats_server.url, user, pw) for user, pw in passwords.items()}
    key_file = tmp_path / "secrets.key"
    write_new_key_file(key_file)
    srt_secret = secrets.token_urlsafe(32)
    secret_values: dict[str, str] = {
        "rtmp stream key": f"rtmp-{secrets.token_urlsafe(12)}",
        "rtmps stream key": f"rtmps-{secrets.token_urlsafe(12)}",
        "srt output passphrase": secrets.token_urlsafe(18),
        "srt secret": srt_secret,
        "secrets key": key_file.read_text().strip(),
        **{f"nats password of {user}": pw for user, pw in passwords.items()},
    }
    rtmp = RtmpServer(tmp_path / "rtmp").start()
    front = RtmpsFront(rtmp).start()
    receiver = SrtReceiver(tmp_path / "srt-output.ts", secret_values["srt output passphrase"])
    receiver.start()
    shared = {"BAYCAST_SRT_SECRET": srt_secret, "BAYCAST_LOG_LEVEL": "debug"}
    services = {
        "ingest": ingest_process(urls["ingest"], tmp_path, BAYCAST_INGEST_SRT_PORTS="1", **shared),
        "mixer": mixer_process(urls["mixer"], tmp_path, **shared),
        "distribution": distribution_process(
            urls["distribution"],
            tmp_path,
            BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE=str(key_file),
            BAYCAST_DISTRIBUTION_OUTPUTS_CA_FILE=str(front.cert),
            **shared,
        ),
    }
    operator = Bus(urls["admin"], "secrets-operator")
    inspector = Bus(urls[INSPECTOR], "secrets-inspector")
    encoder_log = tmp_path / "station-encoder.log"
    samples: list[str] = []
    relay_logs: dict[int, str] = {}
    relay_environments: dict[int, str] = {}
    live_during_samples: list[tuple[int, int, int, int]] = []
    try:
        with processes(*services.values()):
            await operator.connect()
            await inspector.connect()
            token = await add_station(operator, station, "深圳台")
            secret_values["station token"] = token
            address = await wait_srt_address(services["ingest"].http, station, token)
            secret_values["station srt passphrase"] = address["passphrase"]
            station_url = f"srt://127.0.0.1:{address['port']}?mode=caller&latency=120000"
            with stopping(srt_caller(station_url, address["passphrase"], encoder_log, 45)):
                await source_online(services["ingest"], station, 20)
                await create_production(
                    operator,
                    mixer_pb2.Production(
                        id=prod,
                        name="保密",
                        width=1280,
                        height=720,
                        fps=25,
                        sources=[mixer_pb2.ProductionSource(id=station, name="深圳台")],
                    ),
                )
                await mixer_command(
                    operator,
                    prod,
                    mixer_pb2.MixerCommand(cut=mixer_pb2.MixerCommand.Cut(source=station)),
                )
                outputs = {
                    "rtmp": dist.OutputSpec(
                        kind=dist.OUTPUT_KIND_RTMP,
                        url=rtmp.app_url(),
                        stream_key=secret_values["rtmp stream key"],
                    ),
                    "rtmps": dist.OutputSpec(
                        kind=dist.OUTPUT_KIND_RTMPS,
                        url=front.app_url(),
                        stream_key=secret_values["rtmps stream key"],
                    ),
                    "srt": dist.OutputSpec(
                        kind=dist.OUTPUT_KIND_SRT,
                        url=f"srt://127.0.0.1:{receiver.port}",
                        passphrase=secret_values["srt output passphrase"],
                    ),
                }
                for output_id, spec in outputs.items():
                    spec.id, spec.enabled = output_id, True
                    await dist_command(
                        operator, prod, dist.DistCommand(add=dist.AddOutput(output=spec))
                    )

                async def all_live() -> bool:
                    reply = await dist_command(
                        operator, prod, dist.DistCommand(list=dist.ListOutputs())
                    )
                    return sorted(o.status for o in reply.outputs) == [LIVE] * 3

                deadline = time.monotonic() + 25
                while not await all_live():
                    assert time.monotonic() < deadline, "the three pushes not live within 25 s"
                    await asyncio.sleep(0.2)
                distribution_pid = services["distribution"].proc.pid  # type: ignore[union-attr]
                for _ in range(SAMPLES):
                    before = receiver.bytes
                    ps = await asyncio.to_thread(process_list)
                    samples.append(ps)
                    for pid in relay_pids(ps, distribution_pid):
                        relay_logs[pid] = read_proc(pid, "fd/2") or relay_logs.get(pid, "")
                        relay_environments[pid] = read_proc(pid, "environ")
                    await asyncio.sleep(SAMPLE_EVERY_S)
                    # Live through the sample: both RTMP publishers on nginx, SRT bytes still
                    # arriving, the station's source online at ingest.
                    live_during_samples.append(
                        (
                            rtmp.publishers(secret_values["rtmp stream key"]),
                            rtmp.publishers(secret_values["rtmps stream key"]),
                            receiver.bytes - before,
                            len(relay_pids(ps, distribution_pid)),
                        )
                    )
                raw_outputs = await raw_bucket_values(inspector, prod)
                for output_id in outputs:
                    await dist_command(
                        operator, prod, dist.DistCommand(remove=dist.OutputRef(id=output_id))
                    )
                await delete_production(operator, prod)
        logs = {name: proc.logs() for name, proc in services.items()}
    finally:
        with contextlib.suppress(Exception):
            await operator.drain()
        with contextlib.suppress(Exception):
            await inspector.drain()
        receiver.stop()
        front.stop()
        rtmp.stop()
        nats_server.stop()
    logs["nats-server"] = text_of(Path(nats_server.log_path))
    logs["station encoder"] = text_of(encoder_log)
    logs |= {f"relay {pid}": text for pid, text in relay_logs.items()}
    texts = {f"ps sample {i + 1}": ps for i, ps in enumerate(samples)}
    texts |= {f"{name} log": text for name, text in logs.items()}
    texts |= {f"relay {pid} environment": env for pid, env in relay_environments.items()}
    texts |= {f"dist_outputs {key}": value for key, value in raw_outputs.items()}
    leaks: list[Leak] = find_secrets(texts, secret_values)

    rtmp_file = rtmp.wait_recording(secret_values["rtmp stream key"], 10_000)
    rtmps_file = rtmp.wait_recording(secret_values["rtmps stream key"], 10_000)
    arrived = {
        "rtmp": probe(rtmp_file),
        "rtmps": probe(rtmps_file),
        "srt": probe(receiver.path),
    }
    nginx_log = rtmp.logs()
    rtmp.cleanup()
    nats_server.cleanup()
    lines = sum(text.count("\n") for text in logs.values())
    print(
        f"\nitem 28: {len(samples)} ps samples ({sum(s.count(chr(10)) for s in samples)} process"
        f" lines), {len(relay_logs)} relays' logs and environments, {lines} log lines of"
        f" {len(logs)} processes, {len(raw_outputs)} dist_outputs values; {len(secret_values)}"
        f" secrets searched (as they are, percent-encoded, base64): {len(leaks)} found;"
        f" live during"
        f" every sample (rtmp, rtmps publishers, srt bytes, relays): {live_during_samples};"
        f" pictures decoded: "
        + ", ".join(f"{k} {video(v)['nb_read_frames']}" for k, v in arrived.items())
        + f"; {time.monotonic() - started:.1f} s"
    )
    assert leaks == [], "\n".join(str(leak) for leak in leaks)
    # The logs are the show's: distribution logged each push going live (masked).
    assert logs["distribution"].count('"status": "OUTPUT_STATUS_LIVE"') >= 3, logs["distribution"]
    # The samples were taken while the show was on: three relays, every push flowing.
    assert len(samples) == SAMPLES
    assert all(live == (1, 1, live[2], 3) and live[2] > 0 for live in live_during_samples)
    assert len(relay_environments) == 3 and all(relay_environments.values())
    assert all("BAYCAST_" not in env for env in relay_environments.values())
    # The bucket held the three outputs, each secret sealed.
    assert sorted(raw_outputs) == [f"{prod}.{o}" for o in ("rtmp", "rtmps", "srt")]
    assert all(PREFIX in value for value in raw_outputs.values())
    # The keys reached the receiver: nginx saw each publish under its own key (the destination
    # holds its keys; its log is the platform's peer's, not searched, and shows the search would
    # have found them).
    for name in ("rtmp stream key", "rtmps stream key"):
        assert f"publish: name='{secret_values[name]}'" in nginx_log
    for name, info in arrived.items():
        picture = video(info)
        assert (picture["codec_name"], picture["width"], picture["height"]) == (
            "h264",
            PUSH_WIDTH,
            PUSH_HEIGHT,
        ), name
        assert int(picture["nb_read_frames"]) >= SAMPLES * SAMPLE_EVERY_S * 25, (name, picture)
    assert time.monotonic() - started < 60


def text_of(path: Path) -> str:
    return path.read_text(errors="replace")


def video(info: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in info["streams"] if s["codec_type"] == "video")
    return found


async def dist_command(bus: Bus, prod: str, command: dist.DistCommand) -> dist.DistReply:
    return await bus.request(
        subject("prod", prod, "dist", "cmd"), command, dist.DistReply, timeout=10
    )


async def wait_srt_address(http: str, station: str, token: str) -> dict[str, Any]:
    """The station's SRT caller address, once ingest listens for it (it re-reads stations every
    2 s)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await asyncio.to_thread(srt_address, http, station, token)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def raw_bucket_values(bus: Bus, prod: str) -> dict[str, str]:
    """The production's `dist_outputs` values as stored, read as the inspector (a superuser)."""
    store = await bus.nc.jetstream().key_value("dist_outputs")
    values = {}
    for key in await store.keys():
        if key.startswith(prod + "."):
            entry = await store.get(key)
            values[key] = (entry.value or b"").decode(errors="replace")
    return values
