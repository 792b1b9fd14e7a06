"""Rendering: CJK glyphs where they belong, readable, antialiased, premultiplied, scaled."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.graphics.renderer import (
    ClockArt,
    Renderer,
    Scale,
    Sprite,
    TickerArt,
    over,
    premultiply,
    text_sprite,
)
from services.graphics.settings import DEFAULT_FONT_PATH
from services.graphics.template import SHIPPED_DIR, TemplateLibrary, TextElement, parse_template

TZ = ZoneInfo("Asia/Shanghai")
FHD = Scale(1920, 1080)
HD = Scale(1280, 720)
NAME = "粤港澳大湾区"


def templates() -> TemplateLibrary:
    library = TemplateLibrary([SHIPPED_DIR], default_font=DEFAULT_FONT_PATH)
    library.scan()
    return library


def ink_box(alpha: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def reference_mask(text: str, size: int) -> np.ndarray:
    """The same string drawn directly with the same font: the coverage a reader would see."""
    font = ImageFont.truetype(DEFAULT_FONT_PATH, size)
    image = Image.new("L", (size * (len(text) + 2), size * 2), 0)
    ImageDraw.Draw(image).text((size, size // 2), text, font=font, fill=255)
    mask = np.asarray(image)
    x0, y0, x1, y1 = ink_box(mask)
    return mask[y0:y1, x0:x1]


def test_lower_third_chinese_name_is_inside_its_box_and_readable() -> None:
    lower = templates().templates["lower_third"]
    name_el = lower.elements[2]
    assert isinstance(name_el, TextElement) and name_el.text == "{name}"
    fields = {**lower.defaults(), "name": NAME}
    sprite = Renderer(TZ).static_sprite(name_el, fields, FHD, lower.file)
    assert sprite is not None
    # Glyph pixels inside the element's box and nowhere else.
    x0, y0, x1, y1 = Renderer.rect(name_el, fields, FHD)
    layer = np.zeros((1080, 1920), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = sprite.box
    layer[sy0:sy1, sx0:sx1] = sprite.rgba[..., 3]
    inside = np.zeros_like(layer, dtype=bool)
    inside[y0:y1, x0:x1] = True
    assert layer[inside].astype(bool).sum() > 1500
    assert not layer[~inside].any()
    # Readable: the ink equals the same string drawn with the same font and size. Tolerance: at
    # most 1 level of 255 per pixel (premultiplying rounds), nothing else.
    ink = layer[y0:y1, x0:x1]
    bx0, by0, bx1, by1 = ink_box(ink)
    got = ink[by0:by1, bx0:bx1].astype(int)
    want = reference_mask(NAME, 46).astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1
    # ...and that comparison tells strings apart: one different character is far off.
    other = reference_mask("粤港澳大湾去", 46).astype(int)
    w = min(other.shape[1], got.shape[1])
    h = min(other.shape[0], got.shape[0])
    assert np.abs(got[:h, :w] - other[:h, :w]).mean() > 5
    # Antialiased: the glyph edges have partial coverage, not only 0 and 255.
    partial = ((got > 0) & (got < 255)).sum()
    assert partial > 0.2 * (got > 0).sum()


def test_the_whole_lower_third_stays_inside_its_box_at_1080p_and_720p() -> None:
    lower = templates().templates["lower_third"]
    fields = {**lower.defaults(), "name": NAME}
    boxes = {}
    for scale in (FHD, HD):
        art = Renderer(TZ).render(lower, fields, scale, 1)
        layer = np.zeros((scale.height, scale.width, 4), dtype=np.uint8)
        for part in art.parts:
            assert isinstance(part, Sprite)
            bx0, by0, bx1, by1 = part.box
            over(layer[by0:by1, bx0:bx1], part.rgba)
        x0, y0, x1, y1 = art.box
        outside = np.ones(layer.shape[:2], dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert not layer[outside].any()
        assert (layer[..., :3] <= layer[..., 3:4]).all()  # premultiplied
        boxes[scale.height] = art.box
    # The 720p graphic is the 1080p one at two thirds, drawn at its own size (within 3 px).
    assert all(abs(a * 2 / 3 - b) <= 3 for a, b in zip(boxes[1080], boxes[720], strict=True))


def test_premultiply_and_over() -> None:
    straight = np.array([[[200, 100, 50, 128]]], dtype=np.uint8)
    assert premultiply(straight).tolist() == [[[100, 50, 25, 128]]]
    dst = np.array([[[0, 0, 200, 255]]], dtype=np.uint8)
    over(dst, premultiply(straight))
    assert dst.tolist() == [[[100, 50, 25 + 100, 255]]]


def test_over_rounds_exactly_as_a_division_for_every_alpha_and_background() -> None:
    # Every background byte under every alpha, with the brightest premultiplied pixel of it.
    background, alpha = (a.astype(np.uint8) for a in np.mgrid[0:256, 0:256])
    dst = np.repeat(background[..., None], 4, axis=2)
    src = np.repeat(alpha[..., None], 4, axis=2)
    expected = src + (dst.astype(np.uint32) * (255 - alpha[..., None]) + 127) // 255
    over(dst, src)
    assert (dst == expected).all()


def test_text_is_shrunk_to_fit_its_box() -> None:
    style = templates().templates["lower_third"].elements[2].style  # type: ignore[attr-defined]
    long_name = "非常非常非常非常非常非常长的名字"
    sprite = text_sprite(long_name, style, (100, 100, 400, 160), FHD)
    assert sprite is not None
    x0, _, x1, _ = ink_box(sprite.rgba[..., 3])
    assert sprite.x + x0 >= 100 and sprite.x + x1 <= 400


def test_clock_shows_the_time_in_its_zone_and_counts_down() -> None:
    library = templates()
    clock = Renderer(TZ).render(library.templates["clock"], {"city": "北京时间"}, FHD, 1)
    arts = [p for p in clock.parts if isinstance(p, ClockArt)]
    noon_utc = datetime.fromisoformat("2026-03-05T06:00:00+00:00")
    assert [a.text_at(noon_utc) for a in arts] == ["14:00:00", "2026年03月05日 星期四"]
    countdown = library.templates["countdown"]
    art = Renderer(TZ).render(
        countdown, {**countdown.defaults(), "target": "2026-03-05T14:00:00"}, HD, 1
    )
    cd = next(p for p in art.parts if isinstance(p, ClockArt))
    assert cd.text_at(datetime.fromisoformat("2026-03-05T12:58:30+08:00")) == "01:01:30"
    assert cd.text_at(datetime.fromisoformat("2026-03-05T14:00:01+08:00")) == "00:00:00"
    text, sprite = cd.sprite_at(datetime.fromisoformat("2026-03-05T13:59:59+08:00"))
    assert text == "00:00:01" and sprite is not None
    assert cd.sprite_at(datetime.fromisoformat("2026-03-05T13:59:59.5+08:00"))[1] is sprite


def test_a_ticker_strip_is_periodic(tmp_path: Path) -> None:
    t = parse_template(
        """
fields: {items: {kind: list, default: ["甲乙", "AB"]}}
elements:
  - {type: ticker, x: 0, y: 0, width: 500, height: 40, items: items, size: 24}
""",
        "t.yaml",
        default_font=DEFAULT_FONT_PATH,
    )
    art = Renderer(TZ).render(t, t.defaults(), FHD, 1)
    ticker = art.parts[0]
    assert isinstance(ticker, TickerArt) and ticker.text == "甲乙   ●   AB   ●   "
    _, a = ticker.window(7)
    _, b = ticker.window(7 + ticker.period)
    assert a.shape == (40, 500, 4) and np.array_equal(a, b) and a[..., 3].any()
    _, entering = ticker.window(-100)  # entering from the right: blank on the left
    assert not entering[:, :100].any() and entering[:, 100:].any()
    # The headlines' rows: every window's ink lies within them and reaches both.
    assert ticker.ink_rows is not None
    top, bottom = ticker.ink_rows
    assert 0 < top < bottom < 40 and not ticker.tape[:top].any() and not ticker.tape[bottom:].any()
    assert ticker.tape[top, :, 3].any() and ticker.tape[bottom - 1, :, 3].any()


def test_an_image_is_scaled_and_premultiplied(tmp_path: Path) -> None:
    Image.new("RGBA", (40, 20), (255, 128, 0, 128)).save(tmp_path / "logo.png")
    (tmp_path / "logo.yaml").write_text(
        "elements:\n  - {type: image, path: logo.png, x: 30, y: 60}\n", encoding="utf-8"
    )
    from services.graphics.template import load_template

    t = load_template(tmp_path / "logo.yaml", default_font=DEFAULT_FONT_PATH)
    sprite = Renderer(TZ).render(t, {}, HD, 1).parts[0]
    assert isinstance(sprite, Sprite)
    assert sprite.box == (20, 40, 47, 53)  # natural size, scaled by 2/3
    assert sprite.rgba[5, 5].tolist() == [128, 64, 0, 128]
