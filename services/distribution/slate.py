"""The slate sent while the program is missing: a still card with a bilingual line."""

from __future__ import annotations

from functools import lru_cache

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
BACKGROUND = (12, 28, 64)
FOREGROUND = (240, 240, 240)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT_PATH, size)
    except OSError:  # no CJK font installed: the slate still shows, in the default font
        return ImageFont.load_default()


@lru_cache(maxsize=4)
def slate_i420(width: int, height: int, text: str) -> np.ndarray:
    """The slate as a packed I420 image of shape (height*3/2, width); one line per ' / ' part."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    lines = [part.strip() for part in text.split(" / ") if part.strip()]
    font = _font(max(12, height // 14))
    line_height = max(12, height // 14) * 3 // 2
    top = (height - line_height * len(lines)) // 2
    for i, line in enumerate(lines):
        left, _, right, _ = draw.textbbox((0, 0), line, font=font)
        draw.text(
            ((width - (right - left)) // 2, top + i * line_height), line, FOREGROUND, font=font
        )
    frame = av.VideoFrame.from_ndarray(np.asarray(image), format="rgb24")
    packed: np.ndarray = frame.reformat(format="yuv420p").to_ndarray()
    packed.setflags(write=False)
    return packed
