"""Wiring of the graphics service: templates, renderer, desk (commands), layers (media plane),
previews (the control room's look before airing)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp

from services.common.bus import PREFIX, subject_token
from services.common.gen.baycast.v1 import graphics_pb2
from services.common.lifecycle import BaseService, run
from services.common.settings import load_settings
from services.common.telemetry import configure_logging
from services.graphics.desk import GraphicsDesk
from services.graphics.layers import Layers
from services.graphics.preview import LayerPreview
from services.graphics.renderer import Renderer
from services.graphics.settings import GraphicsSettings
from services.graphics.template import SHIPPED_DIR, TemplateLibrary

COMMAND_SUBJECTS = PREFIX + "prod.*.gfx.cmd"


class GraphicsService(BaseService[GraphicsSettings]):
    name = "graphics"

    async def setup(self) -> None:
        folders = [SHIPPED_DIR]
        if self.settings.templates_dir:
            folders.append(Path(self.settings.templates_dir))
        self.library = TemplateLibrary(folders, default_font=self.settings.font_path)
        self.session = aiohttp.ClientSession()
        self.desk = GraphicsDesk(self.bus, self.library, self.session)
        self.desk.rescan()
        await self.desk.start()
        renderer = Renderer(ZoneInfo(self.settings.timezone))
        self.layers = Layers(self.settings, self.desk.scene, renderer)
        self.desk.previewer = LayerPreview(renderer, self.layers.frame_size)
        self.grpc.add_media(self.layers)
        await self.bus.serve_each(
            COMMAND_SUBJECTS,
            graphics_pb2.GfxCommand,
            lambda command, subj: self.desk.handle(subject_token(subj, 1), command),
            queue="graphics",
        )
        self.spawn(self._scan_templates(), "template-scan")

    async def start(self) -> None:
        await super().start()
        await self.desk.set_endpoint(self.grpc_endpoint)

    async def before_drain(self) -> None:
        await self.desk.close()

    async def teardown(self) -> None:
        await self.layers.close()
        await self.session.close()

    async def _scan_templates(self) -> None:
        while True:
            await asyncio.sleep(self.settings.template_scan_s)
            self.desk.rescan()


def main() -> None:
    settings = load_settings(GraphicsSettings, "graphics")
    configure_logging(settings.log_format, settings.log_level)
    run(GraphicsService(settings))
