"""The multiview: preview and program on top, every source below with its name, tally and meter
(a clip's name with the time it has left)."""

from __future__ import annotations

import math
from collections.abc import Mapping

from services.mixer import slates
from services.mixer.clips import ClipDeck
from services.mixer.pictures import BLACK_YUV, Picture, blit, border, fill_rect
from services.mixer.scene_renderer import SceneRenderer

PROGRAM_TALLY_YUV = (81, 90, 240)  # red
PREVIEW_TALLY_YUV = (145, 54, 34)  # green
METER_YUV = (150, 60, 60)
METER_FLOOR_DB = -60.0


class Multiview:
    def __init__(self, scenes: SceneRenderer, clips: ClipDeck, fps: int) -> None:
        self.scenes = scenes
        self.clips = clips
        self.fps = fps
        self.picture = Picture(scenes.width, scenes.height)

    def tile_fps(self, wanted: int) -> int:
        """Frames a second for the multiview's own tile feeds: as many as its watchers take
        (`wanted`), and enough that three arrive within the hold time, so a live tile never
        looks lost."""
        return min(self.fps, max(wanted, math.ceil(3 / self.scenes.hold_s)))

    def render(
        self,
        preview: Picture,
        program: Picture,
        on_program: set[str],
        on_preview: set[str],
        levels: Mapping[str, float],
        now: float,
        tile_fps: int,
    ) -> None:
        mv = self.picture
        w, h = mv.width, mv.height
        mv.fill(BLACK_YUV)
        half_w, half_h = w // 2 // 2 * 2, h // 2 // 2 * 2
        for pic, x, yuv, text in (
            (preview, 0, PREVIEW_TALLY_YUV, "PREVIEW 预监"),
            (program, half_w, PROGRAM_TALLY_YUV, "PROGRAM 主输出"),
        ):
            # Every other pixel: a monitor's thumbnail, 0.3 ms where a filtered scale costs 4 ms.
            mv.y[:half_h, x : x + half_w] = pic.y[: 2 * half_h : 2, : 2 * half_w : 2]
            cx, ch, cw = x // 2, half_h // 2, half_w // 2
            mv.u[:ch, cx : cx + cw] = pic.u[: 2 * ch : 2, : 2 * cw : 2]
            mv.v[:ch, cx : cx + cw] = pic.v[: 2 * ch : 2, : 2 * cw : 2]
            border(mv, x, 0, half_w, half_h, 4, yuv)
            self.scenes.label(mv, text, x + 4, half_h - 4, half_h)
        names = self.scenes.names
        sources = list(names)
        if not sources:
            return
        n = len(sources)
        rows = 1 if n <= 4 else (2 if n <= 10 else (3 if n <= 18 else 4))
        cols = math.ceil(len(sources) / rows)
        cell_w, cell_h = w // cols // 2 * 2, (h - half_h) // rows // 2 * 2
        label_h = max(16, cell_h // 7) // 2 * 2
        tile_w = (cell_w - 8) // 2 * 2
        tile_h = min(cell_h - label_h - 8, tile_w * 9 // 16) // 2 * 2
        for i, source in enumerate(sources):
            x = (i % cols) * cell_w + 4
            y = half_h + (i // cols) * cell_h + 4
            held = self.scenes.monitor_picture(source, tile_w, tile_h, now, tile_fps)
            pic = held.picture if held else slates.slate(names[source], tile_w, tile_h)
            blit(mv, pic, x, y, tile_w, tile_h)
            if source in on_program:
                border(mv, x, y, tile_w, tile_h, 4, PROGRAM_TALLY_YUV)
            elif source in on_preview:
                border(mv, x, y, tile_w, tile_h, 4, PREVIEW_TALLY_YUV)
            level = (levels.get(source, -120.0) - METER_FLOOR_DB) / -METER_FLOOR_DB
            bar = int(max(0.0, min(1.0, level)) * (tile_h - 8)) // 2 * 2
            if bar:
                fill_rect(mv, x + tile_w - 14, y + tile_h - 4 - bar, 8, bar, METER_YUV)
            self.scenes.label(mv, self.tile_name(source), x, y + tile_h + label_h, label_h * 10)

    def tile_name(self, source: str) -> str:
        """A source's name under its tile; a clip's with the time it has left, e.g. 片头 -0:07."""
        name = self.scenes.names[source]
        remaining = self.clips.remaining_s(source)
        if remaining is None:
            return name
        seconds = math.ceil(remaining)
        return f"{name} -{seconds // 60}:{seconds % 60:02d}"
