"""I420 pictures as numpy arrays: one packed (h*3/2, w) buffer with Y, U, V plane views.

Everything here works on whole slices (numpy does the loops); nothing walks pixels in Python.
"""

from __future__ import annotations

import numpy as np

from services.common.media import i420_planes

BLACK_YUV = (16, 128, 128)
WHITE_YUV = (235, 128, 128)


class Picture:
    """A preallocated I420 picture; `y`, `u`, `v` are views into `data`."""

    __slots__ = ("data", "height", "u", "v", "width", "y")

    def __init__(self, width: int, height: int, data: np.ndarray | None = None) -> None:
        self.width = width
        self.height = height
        self.data = data if data is not None else np.empty((height * 3 // 2, width), dtype=np.uint8)
        self.y, self.u, self.v = i420_planes(self.data)

    @classmethod
    def from_planes(
        cls, width: int, height: int, y: np.ndarray, u: np.ndarray, v: np.ndarray
    ) -> Picture:
        """A picture over three separate planes (views into received bytes: no copy).

        Such a picture is only read from (blit, scale); its `data` is the Y plane alone.
        """
        p = cls.__new__(cls)
        p.width, p.height, p.data, p.y, p.u, p.v = width, height, y, y, u, v
        return p

    @classmethod
    def solid(cls, width: int, height: int, yuv: tuple[int, int, int]) -> Picture:
        p = cls(width, height)
        p.fill(yuv)
        return p

    def fill(self, yuv: tuple[int, int, int]) -> None:
        self.y.fill(yuv[0])
        self.u.fill(yuv[1])
        self.v.fill(yuv[2])

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.y, self.u, self.v


def rgb_to_yuv(r: float, g: float, b: float) -> tuple[int, int, int]:
    """BT.709 limited range, what the rest of the chain assumes for HD."""
    y = 16 + (0.2126 * r + 0.7152 * g + 0.0722 * b) * 219 / 255
    u = 128 + (-0.1146 * r - 0.3854 * g + 0.5 * b) * 224 / 255
    v = 128 + (0.5 * r - 0.4542 * g - 0.0458 * b) * 224 / 255
    return round(y), round(u), round(v)


def hex_to_yuv(color: str, default: tuple[int, int, int] = BLACK_YUV) -> tuple[int, int, int]:
    if not color:
        return default
    return rgb_to_yuv(int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16))


def resize_nearest(src: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour scale of one plane (used only while the right rendition is on its way)."""
    rows = np.arange(height) * src.shape[0] // height
    cols = np.arange(width) * src.shape[1] // width
    return src.take(rows, axis=0).take(cols, axis=1)


def blit(
    dst: Picture,
    src: Picture,
    x: int,
    y: int,
    width: int,
    height: int,
    crop: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> None:
    """Copy `src` (cropped by fractions) into the even-aligned box of `dst`."""
    left, top, right, bottom = crop
    sx0 = int(src.width * left) // 2 * 2
    sy0 = int(src.height * top) // 2 * 2
    sx1 = src.width - int(src.width * right) // 2 * 2
    sy1 = src.height - int(src.height * bottom) // 2 * 2
    exact = sx1 - sx0 == width and sy1 - sy0 == height
    for sp, dp, div in ((src.y, dst.y, 1), (src.u, dst.u, 2), (src.v, dst.v, 2)):
        region = sp[sy0 // div : sy1 // div, sx0 // div : sx1 // div]
        h, w = height // div, width // div
        if not exact:
            region = resize_nearest(region, h, w)
        dp[y // div : y // div + h, x // div : x // div + w] = region


def fill_rect(
    dst: Picture, x: int, y: int, width: int, height: int, yuv: tuple[int, int, int]
) -> None:
    """Fill an even-aligned rectangle (clipped to the picture)."""
    x0, y0 = max(0, x) // 2 * 2, max(0, y) // 2 * 2
    x1, y1 = min(dst.width, x + width), min(dst.height, y + height)
    if x1 <= x0 or y1 <= y0:
        return
    dst.y[y0:y1, x0:x1] = yuv[0]
    dst.u[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = yuv[1]
    dst.v[y0 // 2 : (y1 + 1) // 2, x0 // 2 : (x1 + 1) // 2] = yuv[2]


def border(
    dst: Picture, x: int, y: int, width: int, height: int, px: int, yuv: tuple[int, int, int]
) -> None:
    """A frame `px` wide (rounded up to even) just inside the box."""
    px = (px + 1) // 2 * 2
    fill_rect(dst, x, y, width, px, yuv)
    fill_rect(dst, x, y + height - px, width, px, yuv)
    fill_rect(dst, x, y, px, height, yuv)
    fill_rect(dst, x + width - px, y, px, height, yuv)
