"""Pillow draws, numpy holds: template elements become premultiplied RGBA sprites in output pixels.

Text is drawn by FreeType through Pillow as an antialiased 8-bit coverage mask, then coloured and
premultiplied with numpy. Sizes are scaled from the 1920×1080 reference to the subscriber's frame
before drawing (a 720p lower third is drawn at 720p, not shrunk from 1080p), so glyphs stay crisp.

Static elements are rendered once per (element, resolved values, size) and cached; the runs of
static elements of an instance are flattened into one plate. A clock re-renders only when its
text changes; a ticker renders its whole text strip once and the layer slides a window over it.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from services.graphics import metrics
from services.graphics.template import (
    FIELD_REF,
    REFERENCE_HEIGHT,
    REFERENCE_WIDTH,
    RGBA,
    BoxElement,
    ClockElement,
    Element,
    ImageElement,
    Num,
    Ref,
    Shadow,
    Template,
    TextElement,
    TextStyle,
    TickerElement,
    parse_list,
    parse_time,
)

CACHE_ENTRIES = 512
SUPERSAMPLE = 4  # rounded corners are drawn 4× larger and reduced, for smooth edges
WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in layer pixels


# -- pixels --------------------------------------------------------------------------------------


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight-alpha uint8 RGBA to premultiplied uint8 RGBA (rounded)."""
    out = rgba.copy()
    a = rgba[..., 3:4].astype(np.uint16)
    out[..., :3] = ((rgba[..., :3].astype(np.uint16) * a + 127) // 255).astype(np.uint8)
    return out


def colorize(mask: np.ndarray, color: RGBA, opacity: float = 1.0) -> np.ndarray:
    """An 8-bit coverage mask filled with `color`, premultiplied."""
    alpha = (mask.astype(np.uint32) * round(color[3] * opacity) + 127) // 255
    out = np.empty((*mask.shape, 4), dtype=np.uint8)
    for c in range(3):
        out[..., c] = (alpha * color[c] + 127) // 255
    out[..., 3] = alpha
    return out


def over(dst: np.ndarray, src: np.ndarray) -> None:
    """Premultiplied `src` over `dst`, in place (same shapes, uint8).

    dst * (255 - a) / 255 is rounded with two shifts instead of a division: for every product of
    two bytes, (t + 128 + ((t + 128) >> 8)) >> 8 equals round(t / 255).
    """
    t = np.multiply(dst, 255 - src[..., 3:4], dtype=np.uint16)
    t += 128
    t += t >> 8
    t >>= 8
    t += src
    np.copyto(dst, t, casting="unsafe")


def scale_alpha(src: np.ndarray, alpha: int) -> np.ndarray:
    """Premultiplied pixels times alpha/256 (fade)."""
    return ((src.astype(np.uint16) * alpha) >> 8).astype(np.uint8)


def inked(rgba: np.ndarray) -> Box | None:
    """The box (relative to `rgba`) around its pixels that are not transparent; None if all are.

    Premultiplied pixels of alpha 0 are black and change nothing they are drawn over, so only
    this box needs drawing."""
    alpha = rgba[..., 3]
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(alpha.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


@dataclass(frozen=True)
class Sprite:
    """Premultiplied pixels placed at (x, y) of the layer."""

    rgba: np.ndarray
    x: int
    y: int

    @property
    def box(self) -> Box:
        h, w = self.rgba.shape[:2]
        return (self.x, self.y, self.x + w, self.y + h)

    @functools.cached_property
    def ink(self) -> Box | None:
        """`inked(rgba)`, worked out once."""
        return inked(self.rgba)


def union(boxes: list[Box]) -> Box | None:
    boxes = [b for b in boxes if b[2] > b[0] and b[3] > b[1]]
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def flatten(sprites: list[Sprite]) -> Sprite | None:
    """Composite sprites (in order) into one sprite covering them all."""
    box = union([s.box for s in sprites])
    if box is None:
        return None
    canvas = np.zeros((box[3] - box[1], box[2] - box[0], 4), dtype=np.uint8)
    for s in sprites:
        h, w = s.rgba.shape[:2]
        over(canvas[s.y - box[1] : s.y - box[1] + h, s.x - box[0] : s.x - box[0] + w], s.rgba)
    return Sprite(canvas, box[0], box[1])


# -- scale and fonts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """From the 1920×1080 reference frame to the subscriber's frame."""

    width: int
    height: int

    @property
    def sx(self) -> float:
        return self.width / REFERENCE_WIDTH

    @property
    def sy(self) -> float:
        return self.height / REFERENCE_HEIGHT

    def x(self, v: float) -> int:
        return round(v * self.sx)

    def y(self, v: float) -> int:
        return round(v * self.sy)


@functools.lru_cache(maxsize=64)
def font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def number(value: Num, fields: Mapping[str, str]) -> float:
    return float(fields[value.field]) if isinstance(value, Ref) else value


def fill_text(text: str, fields: Mapping[str, str]) -> str:
    return FIELD_REF.sub(lambda m: fields.get(m.group(1), ""), text)


def _with_shadow(
    mask: Image.Image, color: RGBA, opacity: float, shadow: Shadow | None, scale: Scale, pad: int
) -> np.ndarray:
    """The mask coloured, over its blurred, offset shadow (mask already has `pad` margins)."""
    fg = colorize(np.asarray(mask), color, opacity)
    if shadow is None:
        return fg
    dx, dy = scale.x(shadow.dx), scale.y(shadow.dy)
    shifted = Image.new("L", mask.size, 0)
    shifted.paste(mask, (dx, dy))
    if shadow.blur > 0:
        shifted = shifted.filter(ImageFilter.GaussianBlur(shadow.blur * scale.sy))
    out = colorize(np.asarray(shifted), shadow.color, opacity)
    over(out, fg)
    return out


def _shadow_pad(shadow: Shadow | None, scale: Scale) -> int:
    if shadow is None:
        return 0
    return (
        math.ceil(
            max(abs(shadow.dx), abs(shadow.dy)) * max(scale.sx, scale.sy)
            + 3 * shadow.blur * scale.sy
        )
        + 1
    )


def fitted_font(
    style: TextStyle, text: str, max_width: int, scale: Scale
) -> ImageFont.FreeTypeFont:
    """The style's font at output size, shrunk so `text` fits `max_width` (when there is one)."""
    size = max(4, scale.y(style.size))
    f = font(style.font, size)
    if max_width > 0:
        width = f.getlength(text)
        if width > max_width:
            size = max(4, math.floor(size * max_width / width))
            f = font(style.font, size)
    return f


def text_sprite(
    text: str,
    style: TextStyle,
    rect: Box,
    scale: Scale,
    *,
    opacity: float = 1.0,
    shadow: Shadow | None = None,
) -> Sprite | None:
    """`text` aligned in `rect` (x0, y0, x1, y1 in output pixels; x1 == x0 means no box)."""
    if not text:
        return None
    x0, y0, x1, y1 = rect
    box_w, box_h = x1 - x0, y1 - y0
    f = fitted_font(style, text, box_w, scale)
    ascent, descent = f.getmetrics()
    text_w = math.ceil(f.getlength(text))
    line_h = ascent + descent
    if box_w > 0:
        left = {"left": x0, "center": x0 + (box_w - text_w) // 2, "right": x1 - text_w}[style.align]
    else:
        left = {"left": x0, "center": x0 - text_w // 2, "right": x0 - text_w}[style.align]
    if box_h > 0:
        top = {"top": y0, "middle": y0 + (box_h - line_h) // 2, "bottom": y1 - line_h}[style.valign]
    else:
        top = y0
    pad = _shadow_pad(shadow, scale) + 2  # glyphs may overhang their advance a little
    mask = Image.new("L", (text_w + 2 * pad, line_h + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad, pad), text, font=f, fill=255, anchor="la")
    rgba = _with_shadow(mask, style.color, opacity, shadow, scale, pad)
    return Sprite(rgba, left - pad, top - pad)


def box_sprite(el: BoxElement, rect: Box, scale: Scale) -> Sprite | None:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        return None
    pad = _shadow_pad(el.shadow, scale)
    radius = el.radius * scale.sy
    border = round(el.border_width * scale.sy)

    def shape(inset: int) -> Image.Image:
        big = Image.new("L", ((w + 2 * pad) * SUPERSAMPLE, (h + 2 * pad) * SUPERSAMPLE), 0)
        r = max(0.0, radius - inset) * SUPERSAMPLE
        ImageDraw.Draw(big).rounded_rectangle(
            (
                (pad + inset) * SUPERSAMPLE,
                (pad + inset) * SUPERSAMPLE,
                (pad + w - inset) * SUPERSAMPLE - 1,
                (pad + h - inset) * SUPERSAMPLE - 1,
            ),
            radius=r,
            fill=255,
        )
        return big.resize((w + 2 * pad, h + 2 * pad), Image.Resampling.BOX)

    if radius <= 0:
        outer = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
        outer.paste(255, (pad, pad, pad + w, pad + h))
    else:
        outer = shape(0)
    if border > 0:
        rgba = _with_shadow(outer, el.border_color, el.opacity, el.shadow, scale, pad)
        inner = shape(border) if radius > 0 else None
        if inner is None:
            inner = Image.new("L", outer.size, 0)
            inner.paste(255, (pad + border, pad + border, pad + w - border, pad + h - border))
        fill = colorize(np.asarray(inner), el.color, el.opacity)
        # The fill replaces the border colour inside (not over it: a translucent fill stays so).
        m = np.asarray(inner)[..., None].astype(np.uint16)
        rgba = (fill + ((rgba.astype(np.uint16) * (255 - m) + 127) // 255)).astype(np.uint8)
    else:
        rgba = _with_shadow(outer, el.color, el.opacity, el.shadow, scale, pad)
    return Sprite(rgba, x0 - pad, y0 - pad)


def image_sprite(el: ImageElement, rect: Box, scale: Scale) -> Sprite:
    with Image.open(el.path) as img:
        rgba_img = img.convert("RGBA")
    x0, y0, x1, y1 = rect
    w = x1 - x0 if x1 > x0 else round(rgba_img.width * scale.sx)
    h = y1 - y0 if y1 > y0 else round(rgba_img.height * scale.sy)
    rgba_img = rgba_img.resize((max(1, w), max(1, h)), Image.Resampling.LANCZOS)
    rgba = premultiply(np.asarray(rgba_img))
    if el.opacity < 1:
        rgba = scale_alpha(rgba, round(el.opacity * 256))
    return Sprite(rgba, x0, y0)


# -- dynamic elements ----------------------------------------------------------------------------


class ClockArt:
    """A clock or countdown: re-rendered when its text changes (once a second)."""

    def __init__(
        self, el: ClockElement, rect: Box, scale: Scale, tz: ZoneInfo, target: datetime | None
    ) -> None:
        self.el = el
        self.rect = rect
        self.scale = scale
        self.tz = tz
        self.target = target.replace(tzinfo=tz) if target and target.tzinfo is None else target
        self._lock = threading.Lock()
        self._last: tuple[str, Sprite | None] = ("", None)

    def text_at(self, now: datetime) -> str:
        if self.el.mode == "countdown":
            left = (
                0 if self.target is None else max(0, math.ceil((self.target - now).total_seconds()))
            )
            h, rest = divmod(left, 3600)
            m, s = divmod(rest, 60)
            return (
                self.el.format.replace("%H", f"{h:02d}")
                .replace("%M", f"{m:02d}")
                .replace("%S", f"{s:02d}")
            )
        local = now.astimezone(self.tz)
        return local.strftime(self.el.format.replace("%Q", WEEKDAYS_ZH[local.weekday()]))

    def sprite_at(self, now: datetime) -> tuple[str, Sprite | None]:
        text = self.text_at(now)
        with self._lock:
            if self._last[0] == text and self._last[1] is not None:
                return self._last
        sprite = text_sprite(
            text,
            self.el.style,
            self.rect,
            self.scale,
            opacity=self.el.opacity,
            shadow=self.el.shadow,
        )
        with self._lock:
            self._last = (text, sprite)
        return text, sprite


class TickerArt:
    """A crawl: the headlines drawn once as one strip, repeated so any window of it is a slice.

    The strip is `items` joined by the separator, with one more separator at the end, so the seam
    where it loops looks like any other gap.
    """

    def __init__(self, el: TickerElement, rect: Box, scale: Scale, items: list[str]) -> None:
        self.el = el
        self.rect = rect
        self.width = rect[2] - rect[0]
        self.height = rect[3] - rect[1]
        self.speed = el.speed * scale.sx  # output pixels per second
        text = el.separator.join(items) + el.separator if items else ""
        self.text = text
        strip = (
            text_sprite(
                text,
                el.style,
                (0, 0, 0, self.height),
                scale,
                opacity=el.opacity,
                shadow=el.shadow,
            )
            if text
            else None
        )
        if strip is None:
            self.period = 0
            self.tape = np.zeros((self.height, self.width, 4), dtype=np.uint8)
            self.ink_rows: tuple[int, int] | None = None
            return
        # The strip's pixels between x = 0 and its advance width form one period.
        self.period = max(1, math.ceil(fitted_font(el.style, text, 0, scale).getlength(text)))
        period_img = np.zeros((self.height, self.period, 4), dtype=np.uint8)
        src = strip.rgba
        # Place the strip (which starts at strip.x, may be < 0 with padding) and wrap overhangs.
        for shift in (-self.period, 0, self.period):
            x0 = strip.x + shift
            sx0, dx0 = max(0, -x0), max(0, x0)
            w = min(src.shape[1] - sx0, self.period - dx0)
            top = max(0, strip.y)
            sy0 = max(0, -strip.y)
            h = min(src.shape[0] - sy0, self.height - top)
            if w > 0 and h > 0:
                over(period_img[top : top + h, dx0 : dx0 + w], src[sy0 : sy0 + h, sx0 : sx0 + w])
        reps = self.width // self.period + 2
        self.tape = np.ascontiguousarray(np.tile(period_img, (1, reps, 1)))
        # The rows that hold any of the headlines' pixels, in every window of the crawl.
        ink = inked(period_img)
        self.ink_rows = None if ink is None else (ink[1], ink[3])

    def window(self, offset: int) -> tuple[Hashable, np.ndarray]:
        """The visible strip when the crawl has moved `offset` pixels (may be < 0: entering)."""
        if self.period == 0:
            return ("empty",), self.tape
        if offset < 0:
            lead = min(-offset, self.width)
            out = np.zeros((self.height, self.width, 4), dtype=np.uint8)
            out[:, lead:] = self.tape[:, : self.width - lead]
            return ("lead", lead), out
        q = offset % self.period
        return ("tape", q), self.tape[:, q : q + self.width]


# -- instance art --------------------------------------------------------------------------------

Part = Sprite | ClockArt | TickerArt


@dataclass(frozen=True)
class InstanceArt:
    """Everything an instance draws at one output size, in drawing order."""

    parts: tuple[Part, ...]
    box: Box  # where the instance is at rest (for slides and wipes)
    revision: int


class Renderer:
    """Renders templates at a size; static element renderings are cached across instances."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz
        self._cache: OrderedDict[Hashable, Sprite | None] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: Hashable, make: Any) -> Sprite | None:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        sprite = make()
        with self._lock:
            self._cache[key] = sprite
            while len(self._cache) > CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return sprite

    @staticmethod
    def rect(el: Element, fields: Mapping[str, str], scale: Scale) -> Box:
        x, y = scale.x(number(el.x, fields)), scale.y(number(el.y, fields))
        w, h = scale.x(number(el.width, fields)), scale.y(number(el.height, fields))
        return (x, y, x + max(0, w), y + max(0, h))

    def static_sprite(
        self, el: Element, fields: Mapping[str, str], scale: Scale, file: str
    ) -> Sprite | None:
        rect = self.rect(el, fields, scale)
        if isinstance(el, BoxElement):
            return self._cached((file, el, rect, scale), lambda: box_sprite(el, rect, scale))
        if isinstance(el, TextElement):
            text = fill_text(el.text, fields)
            return self._cached(
                (file, el, text, rect, scale),
                lambda: text_sprite(
                    text, el.style, rect, scale, opacity=el.opacity, shadow=el.shadow
                ),
            )
        if isinstance(el, ImageElement):
            return self._cached((file, el, rect, scale), lambda: image_sprite(el, rect, scale))
        raise TypeError(f"not a static element: {type(el).__name__}")

    def render(
        self, template: Template, fields: Mapping[str, str], scale: Scale, revision: int
    ) -> InstanceArt:
        """All parts of an instance; consecutive static elements are flattened into one plate."""
        started = time.perf_counter()
        parts: list[Part] = []
        run: list[Sprite] = []
        boxes: list[Box] = []

        def close_run() -> None:
            plate = flatten(run)
            if plate is not None:
                parts.append(plate)
            run.clear()

        for el in template.elements:
            if isinstance(el, ClockElement):
                close_run()
                target_text = fill_text(el.target, fields)
                clock = ClockArt(
                    el,
                    self.rect(el, fields, scale),
                    scale,
                    self.tz,
                    parse_time(target_text, "target"),
                )
                parts.append(clock)
                boxes.append(self._clock_box(clock))
            elif isinstance(el, TickerElement):
                close_run()
                rect = self.rect(el, fields, scale)
                items = parse_list(fields.get(el.items, "[]"), f"fields.{el.items}")
                parts.append(TickerArt(el, rect, scale, items))
                boxes.append(rect)
            else:
                sprite = self.static_sprite(el, fields, scale, template.file)
                if sprite is not None:
                    run.append(sprite)
                    boxes.append(sprite.box)
        close_run()
        metrics.RENDER_SECONDS.observe(time.perf_counter() - started)
        box = union(boxes) or (0, 0, 0, 0)
        return InstanceArt(tuple(parts), box, revision)

    def _clock_box(self, art: ClockArt) -> Box:
        _, sprite = art.sprite_at(datetime.now(self.tz))
        boxes = [art.rect] + ([sprite.box] if sprite is not None else [])
        return union(boxes) or art.rect
