"""`baycast ctl` verbs of the mixer, run as a real CLI process against a running mixer."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import av
import numpy as np
from PIL import Image

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.productions import ProductionStore
from services.mixer.service import MixerService
from tests.support.media_source import FakeMediaServer
from tests.support.mixer import cards, command, unique
from tests.support.nats import NatsServer


def ctl(nats: NatsServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "ctl", "--nats", nats.url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BAYCAST_LOG_FORMAT": "json"},
    )


def rgb_of(yuv: tuple[int, int, int]) -> np.ndarray:
    image = np.empty((3, 2), dtype=np.uint8)
    image[:2] = yuv[0]
    image[2, :1], image[2, 1:] = yuv[1], yuv[2]
    return av.VideoFrame.from_ndarray(image, format="yuv420p").to_ndarray(format="rgb24")[0, 0]


async def test_ctl_creates_switches_and_snapshots(
    bus: Bus,
    media: FakeMediaServer,
    announce,
    mixer: MixerService,
    nats_server: NatsServer,
    tmp_path,
) -> None:
    prod_id = unique("ctl")
    a, b = (media.add(c) for c in cards(prod_id, 2))
    await announce()
    sa, sb = (c.name.removeprefix("source/") for c in (a, b))
    try:
        run = await asyncio.to_thread(
            ctl,
            nats_server,
            "production",
            "create",
            prod_id,
            "--name",
            "启航·大湾区",
            "--format",
            "1280x720",
            "--source",
            f"{sa}=广州台@{sb}",
            "--source",
            f"{sb}=深圳台",
        )
        assert run.returncode == 0, run.stderr
        assert '"backup": "' + sb in run.stdout
        await command(bus, prod_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get()))

        listing = await asyncio.to_thread(ctl, nats_server, "production", "list")
        assert prod_id in listing.stdout and "启航·大湾区" in listing.stdout
        assert mixer.settings.instance in listing.stdout

        bad = await asyncio.to_thread(ctl, nats_server, "cut", prod_id, "nowhere")
        assert bad.returncode == 2 and "field cut.source" in bad.stderr

        take = await asyncio.to_thread(ctl, nats_server, "take", prod_id)
        assert take.returncode == 0 and f"program={sb}" in take.stdout, take.stderr

        png = tmp_path / "program.png"
        snap = await asyncio.to_thread(
            ctl,
            nats_server,
            "snapshot",
            prod_id,
            "program",
            "-o",
            str(png),
            "--width",
            "320",
            "--height",
            "180",
        )
        assert snap.returncode == 0, snap.stderr
        with Image.open(png) as image:
            assert image.size == (320, 180)
            pixel = np.array(image.convert("RGB"))[90, 160]
        assert np.abs(pixel.astype(int) - rgb_of(b.yuv).astype(int)).max() <= 3

        tbar = await asyncio.to_thread(
            ctl, nats_server, "tbar", prod_id, "0.4", "--type", "dip", "--color", "#ffffff"
        )
        assert tbar.returncode == 0, tbar.stderr
        assert f"program={sb} preview={sa}" in tbar.stdout
        assert "transition=dip tbar=0.40" in tbar.stdout
        off_end = await asyncio.to_thread(ctl, nats_server, "tbar", prod_id, "1.5")
        assert off_end.returncode == 2 and "field manual.position" in off_end.stderr
        rest = await asyncio.to_thread(ctl, nats_server, "tbar", prod_id, "0")
        assert rest.returncode == 0 and "transition=" not in rest.stdout, rest.stderr

        gain = await asyncio.to_thread(ctl, nats_server, "audio", prod_id, sa, "--gain-db", "-6")
        assert gain.returncode == 0, gain.stderr
        strip = await asyncio.to_thread(
            ctl, nats_server, "audio", prod_id, sa, "--comp", "--comp-ratio", "4",
            "--eq-mid", "3@2500/1.4", "--trim-db", "2",
        )  # fmt: skip
        assert strip.returncode == 0, strip.stderr
        settings = json.loads(strip.stdout)
        assert settings["gain_db"] == -6 and settings["trim_db"] == 2  # the fader kept
        assert settings["compressor"] == {"enabled": True, "ratio": 4}
        assert settings["eq"]["mid"] == {"gain_db": 3, "frequency_hz": 2500, "q": 1.4}
        wrong = await asyncio.to_thread(ctl, nats_server, "audio", prod_id, sa, "--comp-ratio", "0")
        assert wrong.returncode == 2 and "field audio.compressor.ratio" in wrong.stderr
        ftb = await asyncio.to_thread(ctl, nats_server, "ftb", prod_id, "--on")
        assert ftb.returncode == 0 and "ftb=on" in ftb.stdout
        layout = await asyncio.to_thread(
            ctl, nats_server, "layout", prod_id, "side_by_side", "--sources", f"{sa},{sb}"
        )
        assert layout.returncode == 0 and "layout=side_by_side" in layout.stdout, layout.stderr
    finally:
        await (await ProductionStore.open(bus)).delete(prod_id)


async def test_ctl_adds_and_removes_a_source_of_a_running_production(
    bus: Bus, mixer: MixerService, nats_server: NatsServer
) -> None:
    prod_id = unique("ctledit")
    store = await ProductionStore.open(bus)
    try:
        made = await asyncio.to_thread(
            ctl,
            nats_server,
            "production",
            "create",
            prod_id,
            "--source",
            "gz=广州台",
            "--source",
            "sz=深圳台@gz",
        )
        assert made.returncode == 0, made.stderr
        await command(bus, prod_id, mixer_pb2.MixerCommand(get=mixer_pb2.MixerCommand.Get()))
        added = await asyncio.to_thread(
            ctl, nats_server, "production", "add-source", prod_id, "zh=珠海台"
        )
        assert added.returncode == 0, added.stderr
        stored = await store.get(prod_id)
        assert [(s.id, s.name) for s in stored.sources] == [
            ("gz", "广州台"),
            ("sz", "深圳台"),
            ("zh", "珠海台"),
        ]
        # gz is on program: refused with the reason, exit code 2.
        refused = await asyncio.to_thread(
            ctl, nats_server, "production", "remove-source", prod_id, "gz"
        )
        assert refused.returncode == 2 and "on program" in refused.stderr
        removed = await asyncio.to_thread(
            ctl, nats_server, "production", "remove-source", prod_id, "zh"
        )
        assert removed.returncode == 0, removed.stderr
        assert [s.id for s in (await store.get(prod_id)).sources] == ["gz", "sz"]
    finally:
        await store.delete(prod_id)
