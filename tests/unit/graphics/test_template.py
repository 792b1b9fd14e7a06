"""Templates as data: the shipped ones load, a broken one is refused naming file and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.common import errors
from services.graphics.settings import DEFAULT_FONT_PATH
from services.graphics.template import (
    SHIPPED_DIR,
    BoxElement,
    Ref,
    TemplateError,
    TemplateLibrary,
    TextElement,
    parse_template,
)

FONT = DEFAULT_FONT_PATH


def parse(text: str, file: str = "t.yaml"):  # type: ignore[no-untyped-def]
    return parse_template(text, file, default_font=FONT, base=Path("/nonexistent"))


def test_the_shipped_templates_load() -> None:
    library = TemplateLibrary([SHIPPED_DIR], default_font=FONT)
    library.scan()
    assert library.errors == {}
    assert set(library.templates) == {
        "logo_bug",
        "live_badge",
        "clock",
        "lower_third",
        "ticker",
        "title_card",
        "countdown",
        "city_label",
    }
    lower = library.templates["lower_third"]
    assert set(lower.fields) == {"name", "name_en", "title", "title_en", "station", "city_en"}
    assert (lower.anim_in.type, lower.anim_in.duration_ms, lower.anim_in.direction) == (
        "slide",
        500,
        "left",
    )
    assert json.loads(library.templates["ticker"].fields["items"].default)
    city = library.templates["city_label"]
    assert isinstance(city.elements[0], BoxElement) and city.elements[0].x == Ref("x")


def test_a_template_reads_colours_fonts_shadows_and_defaults() -> None:
    t = parse(
        """
name: demo
fields:
  who: {default: "记者"}
animation:
  in: {type: wipe, from: right, duration_ms: 300}
elements:
  - type: text
    text: "{who} 直播"
    x: 10
    y: 20
    color: "#11223380"
    shadow: {dx: 1, dy: 2, blur: 3, color: black}
"""
    )
    el = t.elements[0]
    assert isinstance(el, TextElement)
    assert el.style.color == (0x11, 0x22, 0x33, 0x80)
    assert el.shadow is not None and el.shadow.color == (0, 0, 0, 255)
    assert el.style.font == FONT
    assert (t.anim_in.type, t.anim_in.direction, t.anim_in.duration_ms) == ("wipe", "right", 300)
    assert t.anim_out.type == "cut"
    assert t.resolve_fields({}) == {"who": "记者"}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ("elements:\n  - {type: sparkle}", "elements[0].type", "unknown element"),
        (
            'elements:\n  - {type: box, width: 1, height: 1, color: "#12345G"}',
            "elements[0].color",
            "not a colour",
        ),
        (
            'elements:\n  - {type: text, text: hi, font: "/no/such/font.ttf"}',
            "elements[0].font",
            "font not found",
        ),
        ("elements:\n  - {type: text, text: hi, colour: red}", "elements[0].colour", "unknown key"),
        ("elements:\n  - {type: text, text: '{nobody}'}", "elements[0].text", "undeclared field"),
        ("elements:\n  - {type: image, path: missing.png}", "elements[0].path", "image not found"),
        ("elements:\n  - {type: box, width: 10}", "elements[0].height", "required"),
        ("elements: []", "elements", "non-empty"),
        (
            "elements:\n  - {type: box, width: 1, height: 1}\nanimation: {in: {type: spin}}",
            "animation.in.type",
            "must be one of",
        ),
        (
            "fields: {n: {kind: number, default: ten}}\n"
            "elements:\n  - {type: box, width: 1, height: 1}",
            "fields.n.default",
            "number",
        ),
        (
            "fields: {t: {}}\nelements:\n  - {type: box, x: '{t}', width: 1, height: 1}",
            "elements[0].x",
            "not a number",
        ),
        (
            "fields: {t: {}}\nelements:\n  - {type: ticker, items: t, width: 1, height: 1}",
            "elements[0].items",
            "list field",
        ),
    ],
)
def test_a_broken_template_names_the_file_and_the_field(body: str, field: str, words: str) -> None:
    with pytest.raises(TemplateError) as caught:
        parse(body, "/tmp/user/broken.yaml")
    assert caught.value.file == "/tmp/user/broken.yaml"
    assert caught.value.template_field == field
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"/tmp/user/broken.yaml: {field}: ")
    assert isinstance(caught.value, errors.InvalidArgument)  # a command naming it fails clearly


def test_a_file_that_is_not_yaml_is_refused() -> None:
    with pytest.raises(TemplateError) as caught:
        parse("elements: [unclosed", "bad.yaml")
    assert caught.value.file == "bad.yaml" and "not valid YAML" in caught.value.reason


def test_fields_of_a_command_are_checked_against_the_template() -> None:
    t = parse(
        """
fields:
  n: {kind: number, default: 1}
  l: {kind: list, default: [a]}
  when: {kind: time}
elements:
  - {type: box, width: 1, height: 1}
"""
    )
    assert t.resolve_fields({"n": "2.5", "l": '["x", "y"]'})["n"] == "2.5"
    for given, field in [
        ({"m": "1"}, "show.fields.m"),
        ({"n": "two"}, "show.fields.n"),
        ({"l": "x"}, "show.fields.l"),
        ({"l": "[1]"}, "show.fields.l"),
        ({"when": "soon"}, "show.fields.when"),
    ]:
        with pytest.raises(errors.InvalidArgument) as caught:
            t.resolve_fields(given, prefix="show.fields")
        assert caught.value.field == field


def test_the_library_keeps_the_last_good_version_and_lets_users_override(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    library = TemplateLibrary([SHIPPED_DIR, user], default_font=FONT)
    library.scan()
    shipped_badge = library.templates["live_badge"]

    good = 'name: mine\nelements:\n  - {type: box, width: 5, height: 5, color: "#FF0000"}\n'
    (user / "mine.yaml").write_text(good)
    # A user file with a shipped template's name replaces it.
    (user / "badge.yaml").write_text(good.replace("mine", "live_badge"))
    assert set(library.scan()) == {"mine", "live_badge"}
    assert library.templates["live_badge"] is not shipped_badge

    (user / "mine.yaml").write_text(good.replace("#FF0000", "#GG0000"))
    assert library.scan() == []
    assert library.templates["mine"].elements[0].color == (255, 0, 0, 255)  # type: ignore[attr-defined]
    assert library.errors[str(user / "mine.yaml")].template_field == "elements[0].color"

    (user / "mine.yaml").write_text(good.replace("#FF0000", "#00FF00"))
    assert library.scan() == ["mine"]
    assert library.errors == {}

    (user / "mine.yaml").unlink()
    library.scan()
    assert "mine" not in library.templates
    with pytest.raises(errors.NotFound):
        library.get("mine")
