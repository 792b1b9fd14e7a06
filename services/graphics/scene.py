"""What one production has on air: template instances with their values (no I/O here).

The desk changes a scene when a command is accepted; each layer stream reads it every frame and
animates towards it at its own size and frame rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics.template import Template


@dataclass
class OnAir:
    instance: graphics_pb2.GfxInstance
    template: Template
    cut_in: bool = False  # shown with `cut`: appears without its in-animation


@dataclass
class Scene:
    production: str
    on_air: dict[str, OnAir] = field(default_factory=dict)
    # How each instance last left the air (True: cut), read by layer streams as it goes.
    exits: dict[str, bool] = field(default_factory=dict)

    def ordered(self) -> list[OnAir]:
        """Bottom to top: by layer, then by when it went on air."""
        return sorted(
            self.on_air.values(),
            key=lambda o: (o.instance.layer, o.instance.shown_at_us, o.instance.id),
        )

    def snapshot(self) -> graphics_pb2.GfxScene:
        return graphics_pb2.GfxScene(
            production=self.production, instances=[o.instance for o in self.ordered()]
        )
