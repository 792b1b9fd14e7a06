"""Helpers for mixer tests: sources, productions and reading the mixer's handles."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import nats.js.api
import numpy as np

from services.common.bus import PREFIX, Bus, decode, subject
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc, mixer_pb2, rundown_pb2
from services.common.media import proto_to_i420, proto_to_pcm
from services.common.rpc import CHANNEL_OPTIONS
from services.mixer.rundown import ASRUN_STREAM
from services.station.testcard import TestCard
from tests.support.media_source import Card

# Cards with distinct, exactly known colours (Y, U, V) and tones.
STATIONS = [
    ("gz", "广州台", (81, 90, 240)),
    ("sz", "深圳台", (145, 54, 34)),
    ("fs", "佛山台", (41, 240, 110)),
    ("zh", "珠海台", (210, 16, 146)),
    ("zs", "中山台", (170, 166, 16)),
    ("hz", "惠州台", (106, 202, 222)),
    ("zq", "肇庆台", (60, 128, 128)),
    ("jm", "江门台", (120, 100, 180)),
    ("mo", "澳门台", (200, 140, 100)),
    ("dg", "东莞台", (100, 180, 60)),
]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def cards(prefix: str, count: int, fps: int = 25) -> list[Card]:
    """Cards named `source/<prefix>-<station>`, each with its colour and a tone of its own."""
    return [
        Card(f"source/{prefix}-{sid}", yuv, tone_hz=500.0 + 250 * i, fps=fps)
        for i, (sid, _name, yuv) in enumerate(STATIONS[:count])
    ]


def production(
    prod_id: str, card_list: list[Card], width: int = 1280, height: int = 720, **kw: Any
) -> mixer_pb2.Production:
    names = dict((sid, name) for sid, name, _ in STATIONS)
    sources = []
    for card in card_list:
        sid = card.name.removeprefix("source/")
        sources.append(mixer_pb2.ProductionSource(id=sid, name=names[sid.rsplit("-", 1)[1]]))
    return mixer_pb2.Production(
        id=prod_id, name="启航·大湾区", width=width, height=height, fps=25, sources=sources, **kw
    )


async def admin(bus: Bus, command: mixer_pb2.ProductionCommand) -> mixer_pb2.ProductionReply:
    return await bus.request(
        subject("mixer", "production", "cmd"), command, mixer_pb2.ProductionReply, timeout=5
    )


async def command(
    bus: Bus, prod_id: str, cmd: mixer_pb2.MixerCommand, *, retry_for: float = 10.0
) -> mixer_pb2.MixerState:
    """Send a switcher command, waiting for the production's owner to start answering."""
    from services.common import errors

    loop = asyncio.get_running_loop()
    deadline = loop.time() + retry_for
    while True:
        try:
            return await bus.request(
                subject("prod", prod_id, "mixer", "cmd"), cmd, mixer_pb2.MixerState, timeout=5
            )
        except errors.Unavailable:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def frames(
    endpoint: str, handle: str, rendition: media_pb2.Rendition | None = None
) -> AsyncIterator[media_pb2.MediaFrame]:
    """The raw Media.Subscribe stream of one handle (no reconnects: a test sees every gap)."""
    async with grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS) as channel:
        stub = media_pb2_grpc.MediaStub(channel)
        call = stub.Subscribe(
            media_pb2.SubscribeRequest(
                handle=handle, rendition=rendition or media_pb2.Rendition(), subscriber="test"
            )
        )
        async for frame in call:
            yield frame


async def next_video(
    endpoint: str,
    handle: str,
    rendition: media_pb2.Rendition | None = None,
    *,
    skip: int = 0,
    accept: Callable[[np.ndarray], bool] | None = None,
    timeout: float = 10.0,
) -> tuple[media_pb2.VideoFrame, np.ndarray]:
    """The first video frame (after `skip`) that `accept`s, as (proto, packed I420 array)."""

    async def go() -> tuple[media_pb2.VideoFrame, np.ndarray]:
        seen = 0
        async for message in frames(endpoint, handle, rendition):
            if message.WhichOneof("body") != "video":
                continue
            seen += 1
            if seen <= skip:
                continue
            image = proto_to_i420(message.video)
            if accept is None or accept(image):
                return message.video, image
        raise AssertionError("stream ended")

    return await asyncio.wait_for(go(), timeout)


async def collect(
    endpoint: str,
    handle: str,
    seconds: float,
    rendition: media_pb2.Rendition | None = None,
    until: Callable[[], Awaitable[None]] | None = None,
) -> list[media_pb2.MediaFrame]:
    """Every message of a handle for `seconds`."""
    out: list[media_pb2.MediaFrame] = []

    async def go() -> None:
        async for message in frames(endpoint, handle, rendition):
            out.append(message)

    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(go(), seconds)
    return out


def audio_of(messages: list[media_pb2.MediaFrame]) -> np.ndarray:
    chunks = [proto_to_pcm(m.audio) for m in messages if m.WhichOneof("body") == "audio"]
    return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int16)


def yuv_at(image: np.ndarray, x: int, y: int) -> tuple[int, int, int]:
    """Y, U, V of the pixel at (x, y) of a packed I420 image."""
    height = image.shape[0] * 2 // 3
    width = image.shape[1]
    flat = image.reshape(-1)
    c = (width // 2) * (height // 2)
    u = flat[width * height : width * height + c].reshape(height // 2, width // 2)
    v = flat[width * height + c :].reshape(height // 2, width // 2)
    return int(image[y, x]), int(u[y // 2, x // 2]), int(v[y // 2, x // 2])


def close_to(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 3) -> bool:
    return all(abs(int(p) - int(q)) <= tolerance for p, q in zip(a, b, strict=True))


async def card_on_program(
    endpoint: str, prod: str, card: TestCard, width: int, height: int
) -> None:
    """Wait until the program (`width`x`height`) shows a station's test card full screen: its
    background at the card's top-right probe point."""
    probe = card.probe_points()[1]
    x, y = int(probe.x * width), int(probe.y * height)
    await next_video(
        endpoint,
        f"prod/{prod}/program",
        accept=lambda i: close_to(yuv_at(i, x, y), probe.yuv, 12),
    )


async def rundown(
    bus: Bus, prod: str, cmd: rundown_pb2.RundownCommand
) -> rundown_pb2.RundownStatus:
    return await bus.request(
        subject("prod", prod, "rundown", "cmd"), cmd, rundown_pb2.RundownStatus, timeout=10
    )


async def asrun_log(bus: Bus, prod: str) -> list[rundown_pb2.AsRunEntry]:
    sub = await bus.nc.jetstream().subscribe(
        PREFIX + f"prod.{prod}.asrun",
        stream=ASRUN_STREAM,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    entries = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            entries.append(decode(msg.data, rundown_pb2.AsRunEntry))
    finally:
        await sub.unsubscribe()
    return entries
