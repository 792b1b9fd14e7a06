"""The station test card: who is on air, that the picture moves, when it was made, how it sounds.

Picture (I420, drawn with numpy slice assignment into one reused buffer; text pre-rendered once
with Pillow and the wqy-microhei font):

* background in the station's colour, an accent block (top-left quarter by quarter) in its
  complementary colour: these two let a receiver check colours at `probe_points()`;
* the station's Chinese name, centred, white;
* a white square sliding left to right (period 4 s): the picture moves, so it is never "frozen";
* a burnt-in line `HH:MM:SS.mmm #frame`: the UTC capture time and the frame counter.

Sound: a sine at the station's tone (`tone_hz`), -10 dBFS. The station→tone mapping is a table
for the demo's cities (400 Hz for 广州 gz, then +100 Hz each in `DEMO_STATIONS` order: sz 500,
fs 600, zh 700, zs 800, hz 900, zq 1000, jm 1100, mo 1200, dg 1300, bj 1400, reporters rp1 1500,
rp2 1600); any other id gets 1700 + 50 × (crc32(id) mod 20) Hz. The colour hue follows the same
index (golden-ratio steps round the colour wheel), so neighbours in the list look different.
"""

from __future__ import annotations

import colorsys
import time
import zlib
from dataclasses import dataclass
from functools import cache

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
DEMO_STATIONS = ("gz", "sz", "fs", "zh", "zs", "hz", "zq", "jm", "mo", "dg", "bj", "rp1", "rp2")
SAMPLE_RATE = 48_000
TONE_AMPLITUDE = 0.316  # -10 dBFS
WHITE_YUV = (235, 128, 128)
CLOCK_CHARS = "0123456789:.# "
SLIDE_PERIOD_S = 4.0
ACCENT_FRACTION = 0.25


def station_index(station_id: str) -> int:
    if station_id in DEMO_STATIONS:
        return DEMO_STATIONS.index(station_id)
    return len(DEMO_STATIONS) + 4 + zlib.crc32(station_id.encode()) % 20


def tone_hz(station_id: str) -> float:
    if station_id in DEMO_STATIONS:
        return 400.0 + 100.0 * DEMO_STATIONS.index(station_id)
    return 1700.0 + 50.0 * (zlib.crc32(station_id.encode()) % 20)


def rgb_to_yuv(rgb: tuple[float, float, float]) -> tuple[int, int, int]:
    """BT.601 video range, what swscale uses for yuv420p by default."""
    r, g, b = rgb
    y = 16 + 65.481 * r + 128.553 * g + 24.966 * b
    u = 128 - 37.797 * r - 74.203 * g + 112.0 * b
    v = 128 + 112.0 * r - 93.786 * g - 18.214 * b
    return round(y), round(u), round(v)


def station_colours(station_id: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(background, accent) as video-range YUV."""
    hue = (station_index(station_id) * 0.618034) % 1.0
    background = rgb_to_yuv(colorsys.hsv_to_rgb(hue, 0.65, 0.55))
    accent = rgb_to_yuv(colorsys.hsv_to_rgb((hue + 0.5) % 1.0, 0.75, 0.9))
    return background, accent


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT_PATH, size)


def text_mask(text: str, height: int) -> np.ndarray:
    """A boolean mask of `text` rendered `height` pixels tall (even width and height)."""
    font = _font(max(8, int(height * 0.8)))
    left, top, right, bottom = font.getbbox(text)
    width = max(2, right - left + 2)
    image = Image.new("L", (int(width + width % 2), height), 0)
    ImageDraw.Draw(image).text((1 - left, (height - (bottom - top)) // 2 - top), text, 255, font)
    return np.asarray(image) > 127


@dataclass(frozen=True)
class ProbePoint:
    x: float  # fraction of the width
    y: float
    yuv: tuple[int, int, int]
    what: str


class TestCard:
    """Renders the card for one station at one size; `frame(n)` is cheap (a few 0.1 ms)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, station_id: str, name: str, width: int = 1280, height: int = 720) -> None:
        if width % 2 or height % 2:
            raise ValueError("width and height must be even")
        self.station_id = station_id
        self.name = name
        self.width = width
        self.height = height
        self.tone_hz = tone_hz(station_id)
        self.background, self.accent = station_colours(station_id)
        self._base = self._render_base()
        self._work = self._base.copy()
        self._box = max(2, (height // 10) & ~1)
        self._clock_height = max(8, (height * 7 // 100) & ~1)
        self._glyphs = {
            c: text_mask(c if c != " " else "0", self._clock_height) for c in CLOCK_CHARS
        }
        self._glyphs[" "] = np.zeros_like(self._glyphs[" "])
        self._cell = (max(g.shape[1] for g in self._glyphs.values()) + 1) & ~1

    def probe_points(self) -> list[ProbePoint]:
        """Places whose colour never changes, with the colour they have."""
        return [
            ProbePoint(0.125, 0.125, self.accent, "accent block"),
            ProbePoint(0.875, 0.125, self.background, "background top right"),
            ProbePoint(0.875, 0.9, self.background, "background bottom right"),
        ]

    def _planes(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        flat = image.reshape(-1)
        c = (w // 2) * (h // 2)
        return (
            flat[: w * h].reshape(h, w),
            flat[w * h : w * h + c].reshape(h // 2, w // 2),
            flat[w * h + c :].reshape(h // 2, w // 2),
        )

    def _fill(
        self, image: np.ndarray, x: int, y: int, w: int, h: int, yuv: tuple[int, int, int]
    ) -> None:
        py, pu, pv = self._planes(image)
        py[y : y + h, x : x + w] = yuv[0]
        pu[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv[1]
        pv[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] = yuv[2]

    def _stamp(self, image: np.ndarray, mask: np.ndarray, x: int, y: int) -> None:
        """Paint `mask` white at (x, y) (even coordinates), clipped to the picture."""
        h = min(mask.shape[0], self.height - y)
        w = min(mask.shape[1], self.width - x)
        if h <= 0 or w <= 0:
            return
        mask = mask[: h & ~1, : w & ~1]
        py, pu, pv = self._planes(image)
        py[y : y + mask.shape[0], x : x + mask.shape[1]][mask] = WHITE_YUV[0]
        chroma = mask[::2, ::2]
        cy, cx = y // 2, x // 2
        pu[cy : cy + chroma.shape[0], cx : cx + chroma.shape[1]][chroma] = WHITE_YUV[1]
        pv[cy : cy + chroma.shape[0], cx : cx + chroma.shape[1]][chroma] = WHITE_YUV[2]

    def _render_base(self) -> np.ndarray:
        w, h = self.width, self.height
        image = np.empty((h * 3 // 2, w), dtype=np.uint8)
        self._fill(image, 0, 0, w, h, self.background)
        aw, ah = int(w * ACCENT_FRACTION) & ~1, int(h * ACCENT_FRACTION) & ~1
        self._fill(image, 0, 0, aw, ah, self.accent)
        name = text_mask(self.name, max(8, (h * 18 // 100) & ~1))
        name = name[:, : min(name.shape[1], w - 2) & ~1]
        x = ((w - name.shape[1]) // 2) & ~1
        self._stamp(image, name, x, (h * 32 // 100) & ~1)
        return image

    def image(self, frame_number: int, capture_time: float) -> np.ndarray:
        """The packed I420 card for frame `frame_number` captured at `capture_time` (Unix s)."""
        work = self._work
        np.copyto(work, self._base)
        w, h = self.width, self.height
        phase = (capture_time % SLIDE_PERIOD_S) / SLIDE_PERIOD_S
        x = int(phase * (w - self._box)) & ~1
        self._fill(work, x, (h * 60 // 100) & ~1, self._box, self._box, WHITE_YUV)
        stamp = time.strftime("%H:%M:%S", time.gmtime(capture_time))
        text = f"{stamp}.{int(capture_time * 1000) % 1000:03d} #{frame_number:06d}"
        x0, y0 = (w * 5 // 100) & ~1, (h * 82 // 100) & ~1
        for i, char in enumerate(text):
            self._stamp(work, self._glyphs[char], x0 + i * self._cell, y0)
        return work

    def video_frame(self, frame_number: int, capture_time: float) -> av.VideoFrame:
        return av.VideoFrame.from_ndarray(self.image(frame_number, capture_time), format="yuv420p")

    def tone(self, start_sample: int, count: int) -> np.ndarray:
        """Mono int16 samples of the station's tone, phase-continuous across calls."""
        t = (np.arange(count) + start_sample) / SAMPLE_RATE
        return (np.sin(2 * np.pi * self.tone_hz * t) * TONE_AMPLITUDE * 32767).astype(np.int16)
