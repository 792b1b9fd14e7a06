"""One layer's canvas, updated by dirty rectangles (runs in a worker thread, one frame at a time).

Each frame the layer is described as an ordered list of placements (which pixels go where, with
which fade and clip). Placements that did not change cost nothing; where something moved, only
the union of its old and new rectangles is recomposed, and then narrowed to the pixels that really
differ, so a static layer produces no patch at all and a crawl produces one thin strip.
"""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from services.graphics import metrics
from services.graphics.animation import FULL_ALPHA, Pose
from services.graphics.renderer import (
    Box,
    ClockArt,
    InstanceArt,
    Sprite,
    TickerArt,
    over,
    scale_alpha,
)


def intersect(a: Box, b: Box) -> Box | None:
    box = (max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    return box if box[2] > box[0] and box[3] > box[1] else None


def merge(boxes: list[Box]) -> list[Box]:
    """Overlapping or touching rectangles merged into their unions, until none overlap."""
    out = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(out)):
            for j in range(i + 1, len(out)):
                a, b = out[i], out[j]
                if a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]:
                    out[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del out[j]
                    merged = True
                    break
            if merged:
                break
    return out


@dataclass(frozen=True)
class Placement:
    token: Hashable  # identifies the pixels (the same token means the same pixels)
    rgba: np.ndarray
    x: int
    y: int
    alpha: int
    visible: Box  # where it shows on the layer, after clip

    @property
    def key(self) -> Hashable:
        return (self.token, self.x, self.y, self.alpha, self.visible)


@dataclass(frozen=True)
class InstanceFrame:
    """What the layer clock decided for one instance this frame."""

    art: InstanceArt
    pose: Pose
    ticker_offsets: tuple[int, ...] = ()


@dataclass
class Composed:
    patches: list[tuple[Box, bytes]] = field(default_factory=list)
    full: bytes | None = None


class Compositor:
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.canvas = np.zeros((height, width, 4), dtype=np.uint8)
        self._words = self.canvas.view(np.uint32)[..., 0]
        self._placements: list[Placement] = []

    def _placements_for(self, frames: list[InstanceFrame], now: datetime) -> list[Placement]:
        bounds: Box = (0, 0, self.width, self.height)
        out: list[Placement] = []
        for frame in frames:
            p = frame.pose
            clip = intersect(bounds, p.clip) if p.clip is not None else bounds
            if clip is None or p.alpha <= 0:
                continue
            tickers = iter(frame.ticker_offsets)
            for part in frame.art.parts:
                token: Hashable
                ink: Box | None
                if isinstance(part, Sprite):
                    token, rgba, x, y, ink = id(part.rgba), part.rgba, part.x, part.y, part.ink
                elif isinstance(part, ClockArt):
                    text, sprite = part.sprite_at(now)
                    if sprite is None:
                        continue
                    token, rgba, x, y = (id(part), text), sprite.rgba, sprite.x, sprite.y
                    ink = sprite.ink
                else:
                    assert isinstance(part, TickerArt)
                    window_token, rgba = part.window(next(tickers, 0))
                    token, x, y = (id(part), window_token), part.rect[0], part.rect[1]
                    rows = part.ink_rows
                    ink = None if rows is None else (0, rows[0], rgba.shape[1], rows[1])
                if ink is None:  # nothing to draw
                    continue
                x, y = x + p.dx, y + p.dy
                # Only the inked pixels: drawing the transparent ones would change nothing.
                visible = intersect((x + ink[0], y + ink[1], x + ink[2], y + ink[3]), clip)
                if visible is not None:
                    out.append(Placement(token, rgba, x, y, p.alpha, visible))
        return out

    def compose(self, frames: list[InstanceFrame], now: datetime, want_full: bool) -> Composed:
        started = time.perf_counter()
        new = self._placements_for(frames, now)
        old = self._placements
        result = Composed()
        if [p.key for p in new] != [p.key for p in old]:
            old_keys = {p.key for p in old}
            new_keys = {p.key for p in new}
            if old_keys == new_keys:  # same pieces, new stacking order
                dirty = [p.visible for p in new]
            else:
                dirty = [p.visible for p in old if p.key not in new_keys]
                dirty += [p.visible for p in new if p.key not in old_keys]
            for rect in merge(dirty):
                patch = self._recompose(rect, new)
                if patch is not None:
                    result.patches.append(patch)
        self._placements = new
        if want_full:
            result.full = self.canvas.tobytes()
        metrics.COMPOSE_SECONDS.observe(time.perf_counter() - started)
        return result

    def _recompose(self, rect: Box, placements: list[Placement]) -> tuple[Box, bytes] | None:
        x0, y0, x1, y1 = rect
        region = self.canvas[y0:y1, x0:x1]
        # A pixel as one 32-bit word: comparing words is ~100x faster than any() over RGBA.
        words = self._words[y0:y1, x0:x1]
        before = words.copy()
        region[...] = 0
        empty = True
        for p in placements:
            part = intersect(rect, p.visible)
            if part is None:
                continue
            src = p.rgba[part[1] - p.y : part[3] - p.y, part[0] - p.x : part[2] - p.x]
            if p.alpha < FULL_ALPHA:
                src = scale_alpha(src, p.alpha)
            dst = self.canvas[part[1] : part[3], part[0] : part[2]]
            if empty:  # over transparent black is the pixels themselves
                np.copyto(dst, src)
                empty = False
            else:
                over(dst, src)
        changed = words != before
        rows = np.flatnonzero(changed.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(changed.any(axis=0))
        tight = (
            x0 + int(cols[0]),
            y0 + int(rows[0]),
            x0 + int(cols[-1]) + 1,
            y0 + int(rows[-1]) + 1,
        )
        data = self.canvas[tight[1] : tight[3], tight[0] : tight[2]].tobytes()
        return tight, data
