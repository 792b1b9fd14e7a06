"""Layouts as data: a preset kind or a list of boxes, placed on a frame in even pixels.

Fractions become pixels once per (layout, frame size); the compositor then only copies slices.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.gen.baycast.v1 import mixer_pb2

DEFAULT_PIP = (0.66, 0.06, 0.28, 0.28)
DEFAULT_PIP_BORDER = 4


@dataclass(frozen=True)
class PlacedBox:
    """A box in pixels. `source` "" is the bus source. Crops are in fractions of the source."""

    source: str
    x: int
    y: int
    width: int
    height: int
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # left, top, right, bottom
    z: int = 0
    border_px: int = 0
    border_color: str = ""
    label: str = ""

    def source_size(self) -> tuple[int, int]:
        """The rendition to ask the source for, so that after the crop it fills the box."""
        left, top, right, bottom = self.crop
        return even(self.width / (1 - left - right)), even(self.height / (1 - top - bottom))


def even(value: float) -> int:
    return max(2, round(value / 2) * 2)


def _box(x: float, y: float, w: float, h: float, **kw: object) -> mixer_pb2.Box:
    return mixer_pb2.Box(x=x, y=y, width=w, height=h, **kw)  # type: ignore[arg-type]


def _grid(cols: int, rows: int) -> list[mixer_pb2.Box]:
    return [_box(c / cols, r / rows, 1 / cols, 1 / rows) for r in range(rows) for c in range(cols)]


def _city_wall() -> list[mixer_pb2.Box]:
    """1 big + 9 small on a 5×5 grid: the big picture takes 4×4 cells, nine cells frame it."""
    cell = 1 / 5
    boxes = [_box(0, 0, 4 * cell, 4 * cell)]
    boxes += [_box(4 * cell, r * cell, cell, cell) for r in range(4)]
    boxes += [_box(c * cell, 4 * cell, cell, cell) for c in range(5)]
    return boxes


def preset_boxes(layout: mixer_pb2.Layout) -> list[mixer_pb2.Box]:
    """The layout's boxes in fractions, sources filled from `layout.sources` in box order."""
    kind = layout.kind or "full"
    if kind == "custom":
        return list(layout.boxes)
    if kind == "full":
        boxes = [_box(0, 0, 1, 1)]
    elif kind == "side_by_side":
        boxes = [_box(0, 0.25, 0.5, 0.5), _box(0.5, 0.25, 0.5, 0.5)]
    elif kind == "pip":
        inset = mixer_pb2.Box()
        if layout.HasField("pip"):
            inset.CopyFrom(layout.pip)
        else:
            x, y, w, h = DEFAULT_PIP
            inset = _box(x, y, w, h, border_px=DEFAULT_PIP_BORDER)
        inset.z = max(inset.z, 1)
        boxes = [_box(0, 0, 1, 1), inset]
    elif kind == "quad":
        boxes = _grid(2, 2)
    elif kind == "grid3x3":
        boxes = _grid(3, 3)
    elif kind == "city_wall":
        boxes = _city_wall()
    else:
        raise ValueError(f"unknown layout kind {kind!r}")
    for i, box in enumerate(boxes):
        if i < len(layout.sources) and not box.source:
            box.source = layout.sources[i]
    return boxes


def place(layout: mixer_pb2.Layout, width: int, height: int) -> list[PlacedBox]:
    """Boxes in even pixels, in drawing order (z, then list order)."""
    placed = []
    for box in preset_boxes(layout):
        x0, y0 = even_floor(box.x * width), even_floor(box.y * height)
        x1 = min(width, even_floor((box.x + box.width) * width + 1))
        y1 = min(height, even_floor((box.y + box.height) * height + 1))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        placed.append(
            PlacedBox(
                source=box.source,
                x=x0,
                y=y0,
                width=x1 - x0,
                height=y1 - y0,
                crop=(box.crop_left, box.crop_top, box.crop_right, box.crop_bottom),
                z=box.z,
                border_px=box.border_px,
                border_color=box.border_color,
                label=box.label,
            )
        )
    return [b for _, b in sorted(enumerate(placed), key=lambda ib: (ib[1].z, ib[0]))]


def even_floor(value: float) -> int:
    return int(value) // 2 * 2
