"""Downstream key: a graphics layer (premultiplied RGBA patches) keyed over the program.

The layer arrives as dirty rectangles. Only those are converted to YUV (premultiplied, with the
alpha kept as 255 - a per plane), and the key is applied per frame only inside the rectangles
that hold something visible:  out = src * (255 - a) / 255 + layer.
"""

from __future__ import annotations

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import plane_view
from services.mixer.pictures import Picture

Rect = tuple[int, int, int, int]  # x0, y0, x1, y1, even-aligned, x1/y1 exclusive
# Transparent gaps taller than this split a layer into separately keyed bands.
BAND_GAP_ROWS = 16

# The key's black: premultiplied, a pixel of alpha a has Y = 16 * a / 255 where swscale gave 16.
_Y_LIFT = np.array([16 - round(16 * a / 255) for a in range(256)], dtype=np.uint8)
# The same for chroma, in sums of 2x2 blocks: a block of alpha sum s has U = V = 128 * s / 255
# (x4) where swscale gave 128 (x4).
_C_LIFT = np.array([round(128 * s / 255) - 512 for s in range(4 * 255 + 1)], dtype=np.int16)


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _bands(alpha: np.ndarray) -> list[Rect]:
    """Even-aligned rectangles (relative to `alpha`) around the row bands that hold alpha."""
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > BAND_GAP_ROWS)
    starts = np.concatenate(([rows[0]], rows[breaks + 1]))
    ends = np.concatenate((rows[breaks], [rows[-1]]))
    height, width = alpha.shape
    bands = []
    for top, bottom in zip(starts, ends, strict=True):
        cols = np.flatnonzero(alpha[top : bottom + 1].any(axis=0))
        bands.append(
            (
                int(cols[0]) // 2 * 2,
                int(top) // 2 * 2,
                min(width, (int(cols[-1]) + 2) // 2 * 2),
                min(height, (int(bottom) + 2) // 2 * 2),
            )
        )
    return bands


def _quad_sum(plane: np.ndarray, dtype: type[np.integer] = np.uint16) -> np.ndarray:
    """The sum of each 2x2 block of a uint8 plane of even size (at most 1020: any 16-bit
    `dtype` holds it)."""
    out = plane[0::2, 0::2].astype(dtype)
    out += plane[0::2, 1::2]
    out += plane[1::2, 0::2]
    out += plane[1::2, 1::2]
    return out


def _div255(x: np.ndarray) -> None:
    """In place, x = round(x / 255) for uint16 x <= 65025 (a shift instead of a division)."""
    x += 128
    x += x >> 8
    x >>= 8


class Keyer:
    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self.canvas = np.zeros((height, width, 4), dtype=np.uint8)
        self.key = Picture(width, height)
        self.key.fill((0, 0, 0))
        self.inv_y = np.full((height, width), 255, dtype=np.uint16)
        self.inv_c = np.full((height // 2, width // 2), 255, dtype=np.uint16)
        self.active: list[Rect] = []
        self._scratch = np.empty((height, width), dtype=np.uint16)
        self._reformatter = VideoReformatter()

    def clear(self) -> None:
        self.canvas.fill(0)
        self.key.fill((0, 0, 0))
        self.inv_y.fill(255)
        self.inv_c.fill(255)
        self.active = []

    def update(self, layer: media_pb2.LayerFrame) -> bool:
        """Apply one LayerFrame; False if it does not fit this program's size."""
        if layer.width != self.width or layer.height != self.height:
            return False
        if layer.full:
            self.clear()
        for patch in layer.patches:
            r = patch.rect
            x0, y0 = max(0, r.x), max(0, r.y)
            x1, y1 = min(self.width, r.x + r.width), min(self.height, r.y + r.height)
            if x1 <= x0 or y1 <= y0 or len(patch.rgba) != r.width * r.height * 4:
                continue
            pixels = np.frombuffer(patch.rgba, dtype=np.uint8).reshape(r.height, r.width, 4)
            self.canvas[y0:y1, x0:x1] = pixels[y0 - r.y : y1 - r.y, x0 - r.x : x1 - r.x]
            self._refresh((x0 // 2 * 2, y0 // 2 * 2, (x1 + 1) // 2 * 2, (y1 + 1) // 2 * 2))
        return True

    def _refresh(self, rect: Rect) -> None:
        """Reconvert the key inside `rect`: reset it, then convert only the bands with alpha.

        A full-frame layer with a logo bug and a lower third is mostly transparent: converting
        and blending just the bands that hold something keeps both cheap.
        """
        x0, y0, x1, y1 = rect
        self.key.y[y0:y1, x0:x1] = 0
        self.inv_y[y0:y1, x0:x1] = 255
        self.key.u[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 0
        self.key.v[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 0
        self.inv_c[y0 // 2 : y1 // 2, x0 // 2 : x1 // 2] = 255
        for band in _bands(self.canvas[y0:y1, x0:x1, 3]):
            bx0, by0, bx1, by1 = band
            self._convert((x0 + bx0, y0 + by0, x0 + bx1, y0 + by1))
        self.active = [a for a in self.active if not _overlaps(a, rect) or self._visible(a)]

    def _visible(self, rect: Rect) -> bool:
        x0, y0, x1, y1 = rect
        return bool((self.inv_y[y0:y1, x0:x1] != 255).any())

    def _convert(self, rect: Rect) -> None:
        """Convert the canvas inside `rect` to the cached YUV key, then track it as active.

        swscale takes the premultiplied RGB to BT.709 limited-range YUV at full resolution in
        one pass; numpy then moves black to the key's (see _Y_LIFT) and averages each 2x2 block
        of chroma and alpha alike, so that chroma never reaches past the alpha that carries it.
        """
        x0, y0, x1, y1 = rect
        region = self.canvas[y0:y1, x0:x1]
        yuv = self._reformatter.reformat(
            av.VideoFrame.from_numpy_buffer(region, format="rgba"),
            format="yuv444p",
            src_color_range=ColorRange.JPEG,
            dst_color_range=ColorRange.MPEG,
            dst_colorspace=Colorspace.ITU709,
            interpolation="BILINEAR",
            threads=1,
        )
        h, w = y1 - y0, x1 - x0
        y, u, v = (plane_view(plane, h, w) for plane in yuv.planes)
        alpha = region[..., 3]
        np.subtract(y, _Y_LIFT[alpha], out=self.key.y[y0:y1, x0:x1])
        np.subtract(255, alpha, out=self.inv_y[y0:y1, x0:x1], dtype=np.uint16)
        cy0, cy1, cx0, cx1 = y0 // 2, y1 // 2, x0 // 2, x1 // 2
        alpha_sum = _quad_sum(alpha)
        lift = _C_LIFT[alpha_sum]
        for plane, key in ((u, self.key.u), (v, self.key.v)):
            chroma = _quad_sum(plane, np.int16)
            chroma += lift
            chroma += 2
            chroma >>= 2
            np.clip(chroma, 0, 255, out=chroma)
            key[cy0:cy1, cx0:cx1] = chroma
        alpha_sum += 2
        alpha_sum >>= 2
        np.subtract(255, alpha_sum, out=self.inv_c[cy0:cy1, cx0:cx1])
        self._track(rect)

    def _track(self, rect: Rect) -> None:
        """Merge `rect` into the active set so that active rectangles never overlap."""
        merged = rect
        changed = True
        while changed:
            changed = False
            for other in self.active:
                if _overlaps(merged, other):
                    self.active.remove(other)
                    merged = (
                        min(merged[0], other[0]),
                        min(merged[1], other[1]),
                        max(merged[2], other[2]),
                        max(merged[3], other[3]),
                    )
                    changed = True
                    break
        if self._visible(merged):
            self.active.append(merged)

    def apply(self, picture: Picture) -> None:
        """Key the layer over `picture` in place, only where the layer has something."""
        for x0, y0, x1, y1 in tuple(self.active):  # a snapshot: updates may run in a thread
            self._blend(picture.y, self.key.y, self.inv_y, y0, y1, x0, x1)
            cy0, cy1, cx0, cx1 = y0 // 2, y1 // 2, x0 // 2, x1 // 2
            self._blend(picture.u, self.key.u, self.inv_c, cy0, cy1, cx0, cx1)
            self._blend(picture.v, self.key.v, self.inv_c, cy0, cy1, cx0, cx1)

    def _blend(
        self,
        plane: np.ndarray,
        key: np.ndarray,
        inv: np.ndarray,
        y0: int,
        y1: int,
        x0: int,
        x1: int,
    ) -> None:
        region = plane[y0:y1, x0:x1]
        scratch = self._scratch[: y1 - y0, : x1 - x0]
        np.multiply(region, inv[y0:y1, x0:x1], out=scratch)
        _div255(scratch)
        scratch += key[y0:y1, x0:x1]
        np.minimum(scratch, 255, out=scratch)
        np.copyto(region, scratch, casting="unsafe")
