"""Benchmark 1: what the mixer process costs for the 10-source 1080p25 city wall with graphics.

Ten solid-colour sources come over the media plane from their own process (each served at its
box size, as the mixer asks), the graphics service keys a logo bug, a LIVE badge and a clock,
and this process subscribes to the program. The figure is the mixer process's CPU-seconds per
second of program, read from /proc. The reference composes the same wall and keys a layer of
the same area in this process with numpy only (no media plane, no gRPC, no event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import numpy as np

from bench.harness import Result, Stat, process_cpu_s, self_cpu_s
from bench.platform import Platform, card_peer, platform, video_frames
from services.common.bus import subject
from services.common.gen.baycast.v1 import graphics_pb2, media_pb2, mixer_pb2
from services.mixer.keyer import Keyer
from services.mixer.layouts import place
from services.mixer.pictures import Picture, blit
from tests.support.mixer import admin, cards, command, production

WIDTH, HEIGHT, FPS = 1920, 1080, 25
WARMUP_S = 8.0
MEASURE_S = 15.0
TARGET_CORES = 0.25
# Issue 20's target: the mixer within this many times the numpy reference measured in the same run.
TARGET_RATIO = 3.0
GRAPHICS = ("logo_bug", "live_badge", "clock")
Cmd = mixer_pb2.MixerCommand


async def start_show(p: Platform, prod_id: str, prefix: str, count: int = 10) -> list[str]:
    """A 1080p25 production with the city wall on air and standing graphics keyed."""
    wall_cards = cards(prefix, count)
    ids = [c.name.removeprefix("source/") for c in wall_cards]
    wall = mixer_pb2.Layout(name="wall", kind="city_wall", sources=ids)
    prod = production(prod_id, wall_cards, width=WIDTH, height=HEIGHT, layouts=[wall])
    await admin(p.bus, mixer_pb2.ProductionCommand(create=prod))
    await command(p.bus, prod_id, Cmd(layout=Cmd.SetLayout(name="wall")), retry_for=20)
    gfx = subject("prod", prod_id, "gfx", "cmd")
    for template in GRAPHICS:
        show = graphics_pb2.GfxShow(template=template, instance=template, cut=True)
        await p.bus.request(gfx, graphics_pb2.GfxCommand(show=show), graphics_pb2.GfxReply)
    return ids


async def _measure(p: Platform, prod_id: str, runs: int) -> tuple[list[float], float, int]:
    received = 0

    async def consume() -> None:
        nonlocal received
        async for _ in video_frames(p, f"prod/{prod_id}/program"):
            received += 1

    consumer = asyncio.create_task(consume())
    try:
        await asyncio.sleep(WARMUP_S)
        mixer = p.pids()["mixer"]
        skipped0 = p.metric("mixer", "baycast_mixer_ticks_skipped", production=prod_id)
        figures = []
        for _ in range(runs):
            cpu0, t0 = process_cpu_s(mixer), time.monotonic()
            await asyncio.sleep(MEASURE_S)
            figures.append((process_cpu_s(mixer) - cpu0) / (time.monotonic() - t0))
        skipped = p.metric("mixer", "baycast_mixer_ticks_skipped", production=prod_id) - skipped0
        return figures, skipped, received
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer


async def _platform_run(runs: int) -> tuple[list[float], float, int]:
    async with platform("mixer") as p:
        with card_peer(p.launcher.nats_url_for("ingest"), "mc", 10):
            await start_show(p, "bench-mixer", "mc")
            return await _measure(p, "bench-mixer", runs)


def reference_cores(seconds: float = 4.0) -> float:
    """The same frame built in-process: ten tiles blitted, a layer keyed, at 25 fps."""
    wall = mixer_pb2.Layout(kind="city_wall", sources=[f"s{i}" for i in range(10)])
    boxes = place(wall, WIDTH, HEIGHT)
    tiles = [Picture.solid(b.width, b.height, (16 + 20 * i, 128, 128)) for i, b in enumerate(boxes)]
    clean, program = Picture(WIDTH, HEIGHT), Picture(WIDTH, HEIGHT)
    keyer = Keyer(WIDTH, HEIGHT)
    layer = media_pb2.LayerFrame(width=WIDTH, height=HEIGHT, full=True)
    # Roughly the logo, badge and clock: three semi-transparent rectangles.
    for x, y, w, h in ((60, 40, 320, 110), (1660, 40, 200, 70), (1560, 960, 300, 70)):
        rgba = np.full((h, w, 4), 180, dtype=np.uint8)
        layer.patches.add(rect=media_pb2.Rect(x=x, y=y, width=w, height=h), rgba=rgba.tobytes())
    keyer.update(layer)
    frames = int(seconds * FPS)
    cpu0, wall0 = self_cpu_s(), time.perf_counter()
    for _ in range(frames):
        for box, tile in zip(boxes, tiles, strict=True):
            blit(clean, tile, box.x, box.y, box.width, box.height)
        np.copyto(program.data, clean.data)
        keyer.apply(program)
    cpu = self_cpu_s() - cpu0
    del wall0
    return cpu / (frames / FPS)


def run(runs: int) -> list[Result]:
    figures, skipped, received = asyncio.run(_platform_run(runs))
    measured = Stat.of(figures)
    reference = Stat.of([reference_cores() for _ in range(runs)])
    ratio = measured.median / reference.median
    return [
        Result(
            name="Mixer cost: 10-source city wall 1080p25 + graphics, over the media plane",
            target=f"≤ {TARGET_CORES} core and ≤ {TARGET_RATIO:g}x the numpy composition",
            measured=f"mixer process {measured.fmt(' core', 3)}",
            reference=f"same frame in one process, numpy only: {reference.fmt(' core', 3)}",
            ratio=f"{ratio:.0f}x the numpy composition",
            met=measured.median <= TARGET_CORES and ratio <= TARGET_RATIO,
            notes=[
                f"{MEASURE_S:.0f} s per run after {WARMUP_S:.0f} s warm-up; the program "
                f"subscriber here received {received} frames; the mixer skipped "
                f"{skipped:.0f} ticks. The mixer also serves the monitoring service's program "
                "subscription (320x180, 10 fps). The ten tiles (~3.1 MB of raw I420 a frame: "
                "one 1536x864 and nine 384x216) and the 1080p program (3.1 MB a frame) move "
                "through shared-memory rings between the processes (ADR 0010); the mixer pulls "
                "the tiles from the card producer's rings at its tick, with no message per "
                "picture (ADR 0024), and the sources' sound from their sound rings, with no "
                "message per 40 ms chunk (ADR 0029), while the program goes to this benchmark's "
                "subscriber as a slot reference per frame. What remains above the reference, by "
                "a profile of the mixer: the sources' sound (mixed, metered and K-weighted for "
                "loudness, none of it in the reference), the keyer, the program written into "
                "its ring and scaled for monitoring, and the copies out of the tiles' rings. "
                "Pulling the sound took this figure from 0.199-0.204 to 0.162-0.171 core on an "
                "AMD EPYC host, run for run in the same hour; pulling the pictures from 0.231 "
                "to 0.174-0.180 core on an Intel Xeon host. Earlier code on hosts of this kind "
                "measured 0.197 core (AMD EPYC, a quiet hour) and 0.252-0.262 core (busy "
                "hours): the host's other tenants move this figure by a third, and the numpy "
                "reference with it.",
            ],
        )
    ]
