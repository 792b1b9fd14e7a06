"""Transitions between two pictures, written into a third: mix (dissolve), wipe, dip, fade.

Mixing runs in uint16 on preallocated scratch planes: out = (a*(256-k) + b*k) >> 8.
"""

from __future__ import annotations

import numpy as np

from services.mixer.pictures import Picture


class Mixer:
    """Scratch buffers for one frame size, reused every frame."""

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._a = np.empty((height * 3 // 2, width), dtype=np.uint16)
        self._b = np.empty((height * 3 // 2, width), dtype=np.uint16)

    def mix(self, a: Picture, b: Picture, position: float, out: Picture) -> None:
        k = round(min(1.0, max(0.0, position)) * 256)
        if k <= 0:
            np.copyto(out.data, a.data)
            return
        if k >= 256:
            np.copyto(out.data, b.data)
            return
        np.multiply(a.data, 256 - k, out=self._a, dtype=np.uint16)
        np.multiply(b.data, k, out=self._b, dtype=np.uint16)
        self._a += self._b
        self._a += 128  # round, not floor: a dissolve's midpoint is the true mean
        self._a >>= 8
        np.copyto(out.data, self._a, casting="unsafe")

    def mix_color(
        self, a: Picture, yuv: tuple[int, int, int], position: float, out: Picture
    ) -> None:
        """Mix `a` toward a flat colour (dip, fade to black) without a colour picture."""
        k = round(min(1.0, max(0.0, position)) * 256)
        for plane_a, plane_out, value in zip(a.planes(), out.planes(), yuv, strict=True):
            flat_a = plane_a.reshape(-1)
            scratch = self._a.reshape(-1)[: flat_a.size]
            np.multiply(flat_a, 256 - k, out=scratch, dtype=np.uint16)
            scratch += value * k + 128
            scratch >>= 8
            np.copyto(plane_out.reshape(-1), scratch, casting="unsafe")

    def wipe(self, a: Picture, b: Picture, position: float, out: Picture) -> None:
        """Left-to-right wipe: `b` is revealed behind an edge moving across."""
        edge = int(min(1.0, max(0.0, position)) * self.width) // 2 * 2
        for pa, pb, po, div in (
            (a.y, b.y, out.y, 1),
            (a.u, b.u, out.u, 2),
            (a.v, b.v, out.v, 2),
        ):
            e = edge // div
            if po is not pb:
                po[:, :e] = pb[:, :e]
            if po is not pa:
                po[:, e:] = pa[:, e:]

    def dip(
        self, a: Picture, b: Picture, yuv: tuple[int, int, int], position: float, out: Picture
    ) -> None:
        """First half: `a` fades to the colour; second half: the colour fades to `b`."""
        if position < 0.5:
            self.mix_color(a, yuv, position * 2, out)
        else:
            self.mix_color(b, yuv, (1 - position) * 2, out)
