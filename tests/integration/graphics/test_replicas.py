"""Two graphics replicas on one nats-server: each production's scene runs on one of them.

Commands spread over both by the queue group are applied once, by the replica that runs the
scene; only that replica announces and serves the layer handle; when it is killed, the other puts
the same graphics back on air and the handle follows, as the mixer reads it (handle directory);
when a replica drains, it hands its scenes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

from services.common.bus import Bus, decode, subject
from services.common.gen.baycast.v1 import control_pb2, graphics_pb2, media_pb2
from services.common.handles import HandleDirectory, handle_key
from services.common.rpc import ChannelCache
from tests.integration.graphics.receiver import at_rest, shipped
from tests.support.nats import NatsServer
from tests.support.services import ServiceProcess, service_process

WIDTH, HEIGHT = 640, 360
RGBA_RENDITION = media_pb2.Rendition(
    width=WIDTH, height=HEIGHT, fps=25, pixel_format=media_pb2.PIXEL_FORMAT_RGBA
)


class FollowedLayer:
    """The layer of `gfx/<prod>` read the way the mixer reads it: through the handle directory,
    looked up again whenever the stream ends or breaks."""

    def __init__(self, bus: Bus, production: str) -> None:
        self.directory = HandleDirectory(bus)
        self.channels = ChannelCache()
        self.handle = f"gfx/{production}"
        self.canvas = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
        self.full_frames = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> FollowedLayer:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.channels.close()

    async def _run(self) -> None:
        frames = self.directory.frames(self.channels, self.handle, RGBA_RENDITION, subscriber="t")
        async for frame in frames:
            if frame.WhichOneof("body") != "layer":
                continue
            for patch in frame.layer.patches:
                r = patch.rect
                pixels = np.frombuffer(patch.rgba, dtype=np.uint8).reshape(r.height, r.width, 4)
                self.canvas[r.y : r.y + r.height, r.x : r.x + r.width] = pixels
            if frame.layer.full:
                self.full_frames += 1


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what}: not within {timeout} s")


async def resolves_to(
    directory: HandleDirectory, handle: str, endpoint: str, timeout: float
) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await directory.resolve(handle) == endpoint:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"{handle} not at {endpoint} within {timeout} s")


def endpoint(proc: ServiceProcess) -> str:
    return f"127.0.0.1:{proc.grpc_port}"


async def refused_here(proc: ServiceProcess, production: str) -> grpc.StatusCode:
    """The status a direct subscription to `proc`'s layer of `production` ends with."""
    channels = ChannelCache()
    request = media_pb2.SubscribeRequest(handle=f"gfx/{production}", rendition=RGBA_RENDITION)
    try:
        async for _frame in channels.media(endpoint(proc)).Subscribe(request):
            return grpc.StatusCode.OK  # it serves the layer
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    finally:
        await channels.close()
    return grpc.StatusCode.OK


async def test_one_replica_runs_a_scene_and_the_other_takes_it_over(
    nats_server: NatsServer, production: str, tmp_path: Path
) -> None:
    bus = Bus(nats_server.url, "test-ctl")
    await bus.connect()
    directory = HandleDirectory(bus)
    handle = f"gfx/{production}"
    announced: list[str] = []  # the endpoint of every announcement of the handle, in order
    states: list[graphics_pb2.GfxState] = []

    async def on_handle(msg: object) -> None:
        data = getattr(msg, "data", b"")
        if data:  # a put (a withdrawal carries no value)
            announced.append(decode(data, control_pb2.StreamHandle).endpoint)

    async def on_state(state: graphics_pb2.GfxState, _subject: str) -> None:
        states.append(state)

    await bus.nc.subscribe(f"$KV.handles.{handle_key(handle)}", cb=on_handle)
    await bus.subscribe(
        subject("prod", production, "gfx", "state"), graphics_pb2.GfxState, on_state
    )
    replicas = [
        service_process("graphics", nats_server.url, tmp_path, "graphics") for _ in range(3)
    ]
    await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas[:2]))
    cmd_subject = subject("prod", production, "gfx", "cmd")
    template = shipped("live_badge")
    expected, _box = at_rest(template, {"label": "大湾区 LIVE"}, WIDTH, HEIGHT)
    try:
        # One show, retried with one command id: the queue group spreads the tries over both
        # replicas; the scene's one owner applies it once and every try gets the same reply.
        show = graphics_pb2.GfxCommand(
            show=graphics_pb2.GfxShow(
                template="live_badge", instance="badge", fields={"label": "大湾区 LIVE"}, cut=True
            )
        )
        command_id = uuid.uuid4().hex
        replies = [
            await bus.request(
                cmd_subject, show, graphics_pb2.GfxReply, timeout=10, command_id=command_id
            )
            for _ in range(6)
        ]
        assert all(r == replies[0] for r in replies)
        assert [(i.id, i.revision) for i in replies[0].instances] == [("badge", 1)]
        # Both replicas answer `list` (the queue group again): one scene, the same everywhere.
        listing = graphics_pb2.GfxCommand(list=graphics_pb2.GfxList())
        lists = [await bus.request(cmd_subject, listing, graphics_pb2.GfxReply) for _ in range(8)]
        assert {tuple((i.id, i.revision) for i in r.instances) for r in lists} == {(("badge", 1),)}
        assert [s.event for s in states] == ["shown"]

        owner_endpoint = await directory.resolve(handle)
        owner = next(r for r in replicas[:2] if endpoint(r) == owner_endpoint)
        other = next(r for r in replicas[:2] if r is not owner)
        assert announced and set(announced) == {owner_endpoint}  # only the owner announced it
        assert await refused_here(other, production) == grpc.StatusCode.NOT_FOUND

        async with FollowedLayer(bus, production) as layer:
            await until(lambda: np.array_equal(layer.canvas, expected), 10, "badge keyed")
            fulls = layer.full_frames

            # The owner dies without a word: the other replica restores the scene from the
            # bucket, announces the handle, and the layer read through the directory follows.
            assert owner.proc is not None
            owner.proc.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            moved = await resolves_to(directory, handle, endpoint(other), 5.0)
            await until(lambda: layer.full_frames > fulls, 5.0, "a full frame from the new owner")
            keyed_again = time.monotonic() - killed
            assert np.array_equal(layer.canvas, expected)
            print(f"takeover after SIGKILL: handle {moved:.2f} s, keyed again {keyed_again:.2f} s")
            assert keyed_again <= 5.0
            restored = [s.instance for s in states if s.event == "restored"]
            assert [(i.id, i.revision, i.fields["label"]) for i in restored] == [
                ("badge", 1, "大湾区 LIVE")
            ]
            lists = [await bus.request(cmd_subject, listing, graphics_pb2.GfxReply)]
            assert [(i.id, i.revision) for i in lists[0].instances] == [("badge", 1)]

            # A draining replica hands its scenes over at once (its leases are released).
            third = replicas[2]
            await asyncio.to_thread(third.start)
            fulls = layer.full_frames
            other.signal(signal.SIGTERM)
            drained = time.monotonic()
            handed = await resolves_to(directory, handle, endpoint(third), 5.0)
            await until(lambda: layer.full_frames > fulls, 5.0, "a full frame from the third")
            print(f"handover on drain: handle {handed:.2f} s")
            assert np.array_equal(layer.canvas, expected)
            assert await asyncio.to_thread(other.wait, 15) == 0
            assert handed < 3.0, time.monotonic() - drained
            assert set(announced) == {owner_endpoint, endpoint(other), endpoint(third)}
            hide = graphics_pb2.GfxCommand(hide=graphics_pb2.GfxHide(instance="badge", cut=True))
            await bus.request(cmd_subject, hide, graphics_pb2.GfxReply, timeout=10)
            await until(lambda: not layer.canvas[..., 3].any(), 5.0, "badge off air")
    finally:
        for r in replicas:
            r.stop()
        await bus.drain()
