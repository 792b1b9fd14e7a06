"""The scenes this replica runs: each production's graphics, kept in the key-value bucket `gfx`.

A production's scene is a unit of ownership (docs/adr/0015): one graphics replica at a time runs
it. The replica that takes a production restores its scene from the bucket, saves every accepted
change there and announces the production's layer handle `gfx/<prod>` in the handle directory;
the replica that lets it go withdraws the handle and leaves the bucket as it is, so whoever takes
the production next (after a rolling update, or the death of its owner) puts the same graphics
back on air.

The productions worth taking unasked are those whose stored scene has something on air; one
whose scene is empty is taken by the first command or subscription that needs it.
"""

from __future__ import annotations

import contextlib

import structlog

from services.common import errors
from services.common.bus import Bus, KvBucket, subject
from services.common.gen.baycast.v1 import graphics_pb2
from services.common.handles import HandleDirectory
from services.common.kv_mirror import KvMirror
from services.common.media import now_us
from services.graphics import metrics
from services.graphics.scene import OnAir, Scene
from services.graphics.template import TemplateLibrary

BUCKET = "gfx"

log = structlog.get_logger("graphics.scenes")


def handle_name(production: str) -> str:
    return f"gfx/{production}"


class Scenes:
    def __init__(self, bus: Bus, library: TemplateLibrary) -> None:
        self.bus = bus
        self.library = library
        self.directory = HandleDirectory(bus)
        # The productions this replica runs, and only those.
        self.running: dict[str, Scene] = {}
        self.endpoint = ""
        self._kv: KvBucket[graphics_pb2.GfxScene] | None = None
        self._stored: KvMirror[graphics_pb2.GfxScene] | None = None
        self._announced: set[str] = set()
        # The last revision of each (production, instance id), kept after a hide, so a re-shown
        # instance always has a revision its layer streams have not seen.
        self._revisions: dict[tuple[str, str], int] = {}

    async def open(self) -> None:
        """Open the bucket and follow which productions have graphics stored."""
        self._kv = await self.bus.kv(BUCKET, graphics_pb2.GfxScene)
        self._stored = KvMirror(self._kv)
        await self._stored.start()

    async def close(self) -> None:
        """Withdraw the handles still announced (while the bus is up); stop following."""
        for production in list(self._announced):
            await self._withdraw(production)
        if self._stored is not None:
            await self._stored.close()

    async def wanted(self) -> set[str]:
        """The productions whose stored scene has something on air."""
        assert self._stored is not None, "open() first"
        return {p for p, scene in self._stored.items().items() if scene.instances}

    # -- taking and letting go -----------------------------------------------------------------

    async def restore(self, production: str) -> list[graphics_pb2.GfxInstance]:
        """Run `production`'s scene as stored; the instances put back on air."""
        assert self._kv is not None, "open() first"
        entry = await self._kv.get(production)
        scene = Scene(production)
        for inst in entry.value.instances if entry is not None else []:
            try:
                template = self.library.get(inst.template)
            except errors.BaycastError as exc:
                log.error(
                    "restore_dropped", production=production, instance=inst.id, error=exc.message
                )
                continue
            scene.on_air[inst.id] = OnAir(inst, template, cut_in=True)
            self._revisions[(production, inst.id)] = inst.revision
        self.running[production] = scene
        self._count()
        for on_air in scene.ordered():
            await self.publish(production, "restored", on_air.instance)
        await self._announce(production)
        log.info("restored", production=production, instances=len(scene.on_air))
        return [o.instance for o in scene.ordered()]

    async def release(self, production: str) -> None:
        """Stop running `production`'s scene: its handle is withdrawn, the bucket kept."""
        await self._withdraw(production)
        self.running.pop(production, None)
        for key in [k for k in self._revisions if k[0] == production]:
            del self._revisions[key]
        self._count()

    async def forget(self, production: str) -> None:
        """The production is gone: its stored scene goes too."""
        assert self._kv is not None, "open() first"
        with contextlib.suppress(Exception):
            await self._kv.delete(production)

    # -- changes -------------------------------------------------------------------------------

    def next_revision(self, production: str, iid: str) -> int:
        return self._revisions.get((production, iid), 0) + 1

    def note_revision(self, production: str, inst: graphics_pb2.GfxInstance) -> None:
        self._revisions[(production, inst.id)] = inst.revision

    async def commit(self, scene: Scene, event: str, inst: graphics_pb2.GfxInstance) -> None:
        """An accepted change: saved, the handle announced (a first show), the change told."""
        assert self._kv is not None, "open() first"
        self.note_revision(scene.production, inst)
        await self._kv.put(scene.production, scene.snapshot())
        await self._announce(scene.production)
        await self.publish(scene.production, event, inst)
        self._count()

    async def publish(self, production: str, event: str, inst: graphics_pb2.GfxInstance) -> None:
        state = graphics_pb2.GfxState(
            production=production, event=event, instance=inst, time_us=now_us()
        )
        with contextlib.suppress(Exception):
            await self.bus.publish(subject("prod", production, "gfx", "state"), state)

    # -- the layer handles ---------------------------------------------------------------------

    async def set_endpoint(self, endpoint: str) -> None:
        """Known once gRPC listens: announce the handle of every scene run here."""
        self.endpoint = endpoint
        for production in list(self.running):
            await self._announce(production)

    async def _announce(self, production: str) -> None:
        if self.endpoint and production in self.running and production not in self._announced:
            await self.directory.announce(handle_name(production), self.endpoint)
            self._announced.add(production)

    async def _withdraw(self, production: str) -> None:
        if production in self._announced:
            self._announced.discard(production)
            with contextlib.suppress(Exception):
                await self.directory.withdraw(handle_name(production), self.endpoint)

    def _count(self) -> None:
        metrics.INSTANCES_ON_AIR.set(sum(len(s.on_air) for s in self.running.values()))
        metrics.SCENES_RUN.set(len(self.running))
