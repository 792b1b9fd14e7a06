"""RTMP and RTMPS pushes to a real nginx-rtmp, pulled back and decoded."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import subprocess

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from tests.integration.distribution.conftest import FPS, HEIGHT, WIDTH, Show
from tests.support.rtmp import RtmpServer, RtmpsFront, probe

LIVE = dist.OUTPUT_STATUS_LIVE
PUSH_SECONDS = 4.0


async def test_two_pushes_arrive_with_the_production_format(show: Show, rtmp: RtmpServer) -> None:
    for name in ("news", "agency"):
        url = rtmp.app_url()  # rtmp://127.0.0.1:<port>/live
        state = await show.add(
            id=name, kind=dist.OUTPUT_KIND_RTMP, url=url, stream_key=f"key-{name}-secret"
        )
        assert "secret" not in state.url and state.url.endswith("/***")
    for name in ("news", "agency"):
        await show.wait_status(name, LIVE)
    await asyncio.sleep(PUSH_SECONDS)
    pushed = {}
    for name in ("news", "agency"):
        reply = await show.command(stop=dist.OutputRef(id=name))
        assert reply.outputs[0].status == dist.OUTPUT_STATUS_IDLE
        pushed[name] = reply.outputs[0].media_seconds
    await asyncio.sleep(0.5)
    for name in ("news", "agency"):
        info = probe(rtmp.wait_recording(f"key-{name}-secret"))
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        audio = next(s for s in info["streams"] if s["codec_type"] == "audio")
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", WIDTH, HEIGHT)
        assert video["r_frame_rate"] == f"{FPS}/1"
        assert (audio["codec_name"], audio["sample_rate"], audio["channels"]) == ("aac", "48000", 2)
        duration = float(info["format"]["duration"])
        assert pushed[name] >= PUSH_SECONDS - 2.5
        assert abs(duration - pushed[name]) < 0.5, (duration, pushed[name])
        frames = int(video["nb_read_frames"])
        assert abs(frames - duration * FPS) <= 3
    # The secret never left the service in an event.
    assert show.states and all("secret" not in s.url + s.reason for s in show.states)


async def test_rtmps_push_verifies_the_certificate_and_arrives(
    show: Show, rtmp: RtmpServer
) -> None:
    with RtmpsFront(rtmp) as front:
        app_url = front.app_url()
        # The system's authorities do not know this self-signed server: refused, not retried.
        await show.add(id="untrusted", kind=dist.OUTPUT_KIND_RTMPS, url=app_url, stream_key="x")
        failed = await show.wait_status("untrusted", dist.OUTPUT_STATUS_FAILED)
        assert failed.attempts == 1 and "certificate" in failed.reason.lower(), failed.reason
        # Trusting its certificate (as an operator would a private CA), the push goes through.
        distributor = show.service.distributor
        distributor.settings = dataclasses.replace(
            distributor.settings, outputs_ca_file=str(front.cert)
        )
        await show.add(
            id="secure",
            kind=dist.OUTPUT_KIND_RTMPS,
            url=front.app_url(),
            stream_key="tls-key",
        )
        live = await show.wait_status("secure", dist.OUTPUT_STATUS_LIVE)
        assert live.url.startswith("rtmps://") and live.url.endswith("/***")
        await asyncio.sleep(3)
        stopped = (await show.command(stop=dist.OutputRef(id="secure"))).outputs[0]
        info = probe(rtmp.wait_recording("tls-key"))
        video = next(s for s in info["streams"] if s["codec_type"] == "video")
        assert (video["width"], video["height"]) == (WIDTH, HEIGHT)
        assert abs(float(info["format"]["duration"]) - stopped.media_seconds) < 0.5


async def test_the_stream_key_reaches_the_server_but_neither_argv_nor_the_bucket(
    show: Show, rtmp: RtmpServer
) -> None:
    """The relay gets the application and the stream through its preset pipe: nginx-rtmp sees
    the same publish as from the whole URL, for a key given apart (with a trailing slash on the
    application URL), inside the URL, or below an application instance; `ps` shows no key."""
    tag = secrets.token_hex(4)
    cases = {
        "apart": ({"url": rtmp.app_url() + "/", "stream_key": f"apart-{tag}"}, f"apart-{tag}"),
        "in-url": ({"url": rtmp.url(f"inurl-{tag}")}, f"inurl-{tag}"),
        "instance": (
            {"url": rtmp.app_url() + "/inst", "stream_key": f"nested-{tag}"},
            f"inst/nested-{tag}",
        ),
    }
    for name, (fields, _) in cases.items():
        state = await show.add(id=name, kind=dist.OUTPUT_KIND_RTMP, **fields)
        assert tag not in state.url and state.url.endswith("/***"), state.url
    for name in cases:
        await show.wait_status(name, LIVE)
    ps_samples = []
    for _ in range(3):  # while every push is live (nginx counts its publisher)
        assert all(rtmp.publishers(stream) == 1 for _, stream in cases.values()), rtmp.logs()
        ps = await asyncio.to_thread(
            subprocess.run, ["ps", "-ww", "-eo", "args"], capture_output=True, text=True
        )
        relays = [line for line in ps.stdout.splitlines() if f"127.0.0.1:{rtmp.port}" in line]
        ps_samples.append((relays, [line for line in ps.stdout.splitlines() if tag in line]))
        await asyncio.sleep(0.5)
    for relays, leaks in ps_samples:
        assert len(relays) == len(cases) and leaks == [], (relays, leaks)
        assert all(line.endswith(f"rtmp://127.0.0.1:{rtmp.port}") for line in relays), relays
    store = await show.bus.nc.jetstream().key_value("dist_outputs")
    for name in cases:
        raw = (await store.get(f"{show.prod}.{name}")).value or b""
        assert tag.encode() not in raw and b"sealed:v1:" in raw, raw
