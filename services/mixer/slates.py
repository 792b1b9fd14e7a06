"""Pictures drawn with text: the signal-lost slate and box labels, rendered once and cached.

Pillow draws RGB once per (text, size); PyAV converts it to I420. The frame clock only copies.
"""

from __future__ import annotations

from functools import lru_cache

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.mixer.pictures import Picture

FONT_PATH = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
SLATE_TEXT = "信号中断 / SIGNAL LOST"
SLATE_BACKGROUND = (40, 40, 48)
SLATE_STRIPE = (200, 30, 30)
LABEL_BACKGROUND = (20, 20, 20)


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.truetype(FONT_PATH, size)
    except OSError:  # the font package is missing: still draw something readable
        return ImageFont.load_default()


def rgb_to_picture(image: Image.Image) -> Picture:
    frame = av.VideoFrame.from_ndarray(np.asarray(image.convert("RGB")), format="rgb24")
    yuv = frame.reformat(format="yuv420p").to_ndarray()
    return Picture(image.width, image.height, np.ascontiguousarray(yuv))


@lru_cache(maxsize=128)
def slate(name: str, width: int, height: int) -> Picture:
    """ "信号中断 / SIGNAL LOST" over the station's name, at one size (cached)."""
    image = Image.new("RGB", (width, height), SLATE_BACKGROUND)
    draw = ImageDraw.Draw(image)
    stripe = max(2, height // 40)
    draw.rectangle((0, height // 2 - stripe // 2, width, height // 2 + stripe // 2), SLATE_STRIPE)
    big = _font(max(10, height // 12))
    small = _font(max(8, height // 16))
    draw.text((width / 2, height * 0.38), SLATE_TEXT, font=big, fill="white", anchor="mm")
    draw.text((width / 2, height * 0.64), name, font=small, fill=(230, 230, 230), anchor="mm")
    return rgb_to_picture(image)


@lru_cache(maxsize=256)
def label(text: str, height: int) -> Picture:
    """White text on a dark bar, `height` pixels high, as wide as the text needs (even)."""
    font = _font(max(8, height * 3 // 4))
    left, _top, right, _bottom = font.getbbox(text)
    width = int(right - left + height) // 2 * 2 + 2
    image = Image.new("RGB", (width, height), LABEL_BACKGROUND)
    ImageDraw.Draw(image).text(
        (height // 2, height / 2), text, font=font, fill="white", anchor="lm"
    )
    return rgb_to_picture(image)
