"""Wiring of the graphics service: templates, renderer, desk (commands), layers (media plane),
previews (the control room's look before airing), and the steward that gives each production's
scene one replica at a time (docs/adr/0015)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from services.common import errors
from services.common.bus import PREFIX, PRODUCTIONS_BUCKET, subject_token
from services.common.gen.baycast.v1 import graphics_pb2, mixer_pb2
from services.common.kv_mirror import KvMirror
from services.common.lifecycle import BaseService, run
from services.common.media_service import MediaService
from services.common.settings import load_settings
from services.common.steward import Steward
from services.common.telemetry import configure_logging
from services.graphics import metrics
from services.graphics.data_policy import DataPolicy
from services.graphics.data_reader import DataReader
from services.graphics.desk import GraphicsDesk, check_production
from services.graphics.layers import Layers
from services.graphics.preview import LayerPreview
from services.graphics.renderer import Renderer
from services.graphics.scene import Scene
from services.graphics.settings import GraphicsSettings
from services.graphics.template import SHIPPED_DIR, TemplateLibrary

COMMAND_SUBJECTS = PREFIX + "prod.*.gfx.cmd"
# On drain, how long the commands already delivered may take before the scenes are handed over.
LEAVE_QUEUE_S = 2.0


def production_of(subj: str) -> str:
    """`baycast.v1.prod.<prod>.gfx.cmd` -> `<prod>`, the unit its command is about."""
    return check_production(subject_token(subj, 1))


class GraphicsService(BaseService[GraphicsSettings]):
    name = "graphics"

    async def setup(self) -> None:
        s = self.settings
        folders = [SHIPPED_DIR]
        if s.templates_dir:
            folders.append(Path(s.templates_dir))
        self.library = TemplateLibrary(folders, default_font=s.font_path)
        # Bindings read only what the data policy allows (BAYCAST_GRAPHICS_BINDING_*).
        self.reader = DataReader(DataPolicy.from_settings(s))
        self.desk = GraphicsDesk(self.bus, self.library, self.reader)
        self.desk.rescan()
        await self.desk.open()
        # A deleted production's scene is let go and its stored graphics removed, so no
        # replica keeps rendering it (or takes it up again after a restart).
        self.productions = await KvMirror.open(self.bus, PRODUCTIONS_BUCKET, mixer_pb2.Production)
        renderer = Renderer(ZoneInfo(s.timezone))
        self.layers = Layers(self.settings, self._scene_here, renderer)
        self.desk.previewer = LayerPreview(renderer, self.layers.frame_size)
        self.grpc.add_media(MediaService(self.layers.open, metrics.MEDIA_SENT_BYTES))
        self.steward = Steward(
            self.bus,
            self.name,
            s.instance,
            start=self.desk.start_scene,
            stop=self._stop_scene,
            wanted=self.desk.scenes.wanted,
            # A draining replica hands its scenes over and takes none back.
            can_take=lambda _production: not self.stopping.is_set(),
            lease_seconds=s.lease_seconds,
            renew_seconds=s.lease_renew_seconds,
        )
        await self.steward.open()
        self.productions.on_change(self._production_changed)
        self._command_subs: list[Any] = await self.steward.serve(
            COMMAND_SUBJECTS,
            graphics_pb2.GfxCommand,
            lambda command, subj: self.desk.handle(subject_token(subj, 1), command),
            unit_of=production_of,
        )
        self.spawn(self._scan_templates(), "template-scan")

    async def start(self) -> None:
        await super().start()
        await self.desk.set_endpoint(self.grpc_endpoint)

    async def before_drain(self) -> None:
        # Leave the command queue group first (what it delivered is still answered), so new
        # commands go to the other replicas; then hand the scenes over: the leases are released,
        # so another replica takes each at its next round instead of after the lease expires.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEAVE_QUEUE_S):
                await self._command_subs[0].drain()
        await self.steward.close()
        await self.desk.close()

    async def teardown(self) -> None:
        await self.productions.close()
        await self.layers.close()
        await self.reader.close()

    def _production_changed(self, production: str, value: mixer_pb2.Production | None) -> None:
        if value is None:
            self.spawn(self._production_gone(production), f"scene-gone-{production}")

    async def _production_gone(self, production: str) -> None:
        """Every replica hears of it: the owner lets the scene go, and the stored scene (which
        would make it wanted again) is removed; unless the production is back already (deleted
        and made again, as `baycast up` does), whose new graphics stay."""
        if await self.productions.bucket.get(production) is not None:
            return
        if self.steward.owns(production):
            await self.steward.drop(production)
            self.log.info("scene_removed", production=production, reason="production deleted")
        await self.desk.scenes.forget(production)

    async def _stop_scene(self, production: str) -> None:
        await self.desk.stop_scene(production)
        await self.layers.end(production)

    async def _scene_here(self, production: str) -> Scene | None:
        """The scene a layer subscription reads: run here (taken if nobody runs it), or None."""
        try:
            if await self.steward.route(production):
                return None
        except errors.BaycastError:
            return None
        return await self.desk.running(production)

    async def _scan_templates(self) -> None:
        while True:
            await asyncio.sleep(self.settings.template_scan_s)
            self.desk.rescan()


def main() -> None:
    settings = load_settings(GraphicsSettings, "graphics")
    configure_logging(settings.log_format, settings.log_level)
    run(GraphicsService(settings))
