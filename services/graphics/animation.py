"""In and out animations, counted in frames of the layer's own clock.

An animation of D ms at F fps lasts N = round(D·F/1000) frames (half up): a 500 ms slide at 25 fps
is 13 frames, the last at rest. Counting frames rather than reading a wall clock makes every step
the same size even when the machine is busy; when the clock falls behind, the layer skips ticks
and the animation skips with it, so it still ends on time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.graphics.renderer import Box
from services.graphics.template import Animation

FULL_ALPHA = 256


def frames_for(anim: Animation, fps: float) -> int:
    """How many frames `anim` takes at `fps` (0: it cuts)."""
    if anim.type == "cut" or anim.duration_ms <= 0:
        return 0
    return max(1, math.floor(anim.duration_ms * fps / 1000 + 0.5))


def ease(name: str, p: float) -> float:
    p = min(1.0, max(0.0, p))
    if name == "ease_in":
        return p**3
    if name == "ease_out":
        return 1 - (1 - p) ** 3
    if name == "ease_in_out":
        return 4 * p**3 if p < 0.5 else 1 - (-2 * p + 2) ** 3 / 2
    return p


@dataclass(frozen=True)
class Pose:
    """How an instance is drawn this frame: moved, faded, clipped (layer pixels)."""

    dx: int = 0
    dy: int = 0
    alpha: int = FULL_ALPHA
    clip: Box | None = None


AT_REST = Pose()


def pose(anim: Animation, visible: float, box: Box, width: int, height: int, sx: float) -> Pose:
    """The pose at `visible` (0: fully out, 1: at rest) for an instance whose art covers `box`.

    The same formula serves both ways: in, `visible` rises from 0 to 1; out, it falls to 0, and
    `anim.direction` is the side the graphic comes from or leaves to.
    """
    if visible >= 1 or anim.type == "cut":
        return AT_REST
    x0, y0, x1, y1 = box
    hidden = 1 - visible
    if anim.type == "fade":
        return Pose(alpha=round(visible * FULL_ALPHA))
    if anim.type == "slide":
        side = anim.direction
        if anim.distance > 0:
            distance = anim.distance * sx
        else:  # far enough to leave the frame
            distance = {"left": x1, "right": width - x0, "top": y1, "bottom": height - y0}[side]
        shift = round(hidden * distance)
        return {
            "left": Pose(dx=-shift),
            "right": Pose(dx=shift),
            "top": Pose(dy=-shift),
            "bottom": Pose(dy=shift),
        }[side]
    # wipe: reveal from the named side
    w, h = x1 - x0, y1 - y0
    return Pose(
        clip={
            "left": (x0, y0, x0 + round(visible * w), y1),
            "right": (x1 - round(visible * w), y0, x1, y1),
            "top": (x0, y0, x1, y0 + round(visible * h)),
            "bottom": (x0, y1 - round(visible * h), x1, y1),
        }[anim.direction]
    )
