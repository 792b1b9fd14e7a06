"""Templates as data: a YAML or JSON file describes a graphic; no code per graphic.

A template has fields (with kinds and defaults), elements drawn in order (box, text, image, clock,
ticker), and an in and an out animation (slide, fade, wipe, cut). Positions and sizes are in a
1920×1080 reference frame; the renderer scales them to the subscriber's size. A number can be a
field reference (`x: "{x}"`), so one city-label template serves every box of the city wall.

A file with an error is refused as a whole with `TemplateError`, naming the file and the field at
fault (`elements[2].color`); a template that was good before keeps its last good version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from PIL import ImageColor, ImageFont

from services.common import errors

REFERENCE_WIDTH = 1920
REFERENCE_HEIGHT = 1080
TEMPLATE_SUFFIXES = (".yaml", ".yml", ".json")
FIELD_KINDS = ("text", "number", "list", "time")
ANIMATION_TYPES = ("cut", "slide", "fade", "wipe")
EASINGS = ("linear", "ease_in", "ease_out", "ease_in_out")
DIRECTIONS = ("left", "right", "top", "bottom")
ALIGNS = ("left", "center", "right")
VALIGNS = ("top", "middle", "bottom")
CLOCK_MODES = ("time", "countdown")
MAX_DURATION_MS = 10_000
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FIELD_REF = re.compile(r"\{(\w+)\}")

RGBA = tuple[int, int, int, int]


class TemplateError(errors.InvalidArgument):
    """A template file is wrong; `file` and `field` say where."""

    def __init__(self, file: str, field: str, message: str) -> None:
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}", field=field)
        self.file = file
        self.template_field = field
        self.reason = message


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str
    default: str


@dataclass(frozen=True)
class Ref:
    """A number taken from a field at render time."""

    field: str


Num = float | Ref


@dataclass(frozen=True)
class Shadow:
    dx: float
    dy: float
    blur: float
    color: RGBA


@dataclass(frozen=True)
class Element:
    """What every element has: a rectangle in reference pixels, an opacity, an optional shadow."""

    index: int
    x: Num
    y: Num
    width: Num
    height: Num
    opacity: float
    shadow: Shadow | None

    @property
    def dynamic(self) -> bool:
        """Whether the element changes by itself over time (and is redrawn per frame)."""
        return False


@dataclass(frozen=True)
class BoxElement(Element):
    color: RGBA
    radius: float
    border_width: float
    border_color: RGBA


@dataclass(frozen=True)
class TextStyle:
    size: float
    color: RGBA
    font: str
    align: str
    valign: str


@dataclass(frozen=True)
class TextElement(Element):
    text: str  # may hold {field} references
    style: TextStyle


@dataclass(frozen=True)
class ImageElement(Element):
    path: str


@dataclass(frozen=True)
class ClockElement(Element):
    mode: str  # time: wall clock in the service's time zone; countdown: time left to `target`
    format: str
    target: str  # countdown: an ISO time or a {field} reference
    style: TextStyle

    @property
    def dynamic(self) -> bool:
        return True


@dataclass(frozen=True)
class TickerElement(Element):
    items: str  # the list field holding the headlines
    separator: str
    speed: float  # reference pixels per second
    style: TextStyle

    @property
    def dynamic(self) -> bool:
        return True


@dataclass(frozen=True)
class Animation:
    type: str = "cut"
    duration_ms: int = 0
    direction: str = "left"  # slide/wipe: the side the graphic comes from (in) or goes to (out)
    easing: str = "linear"
    distance: float = 0.0  # slide: reference pixels; 0 moves it fully out of the frame


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    file: str
    fields: Mapping[str, FieldSpec]
    elements: tuple[Element, ...]
    anim_in: Animation = field(default_factory=Animation)
    anim_out: Animation = field(default_factory=Animation)

    def defaults(self) -> dict[str, str]:
        return {name: spec.default for name, spec in self.fields.items()}

    def resolve_fields(self, given: Mapping[str, str], *, prefix: str = "fields") -> dict[str, str]:
        """The template's defaults overlaid with `given`, each checked against its kind."""
        values = self.defaults()
        for name, value in given.items():
            spec = self.fields.get(name)
            if spec is None:
                raise errors.InvalidArgument(
                    f"template {self.name!r} has no field {name!r} "
                    f"(it has: {', '.join(self.fields) or 'none'})",
                    field=f"{prefix}.{name}",
                )
            check_value(spec, value, f"{prefix}.{name}")
            values[name] = value
        return values


def check_value(spec: FieldSpec, value: str, where: str) -> None:
    """Raise InvalidArgument if `value` does not fit the field's kind."""
    if spec.kind == "number":
        try:
            float(value)
        except ValueError:
            raise errors.InvalidArgument(f"{spec.name} must be a number", field=where) from None
    elif spec.kind == "list":
        parse_list(value, where)
    elif spec.kind == "time":
        parse_time(value, where)


def parse_list(value: str, where: str) -> list[str]:
    """A list field's value: a JSON array of strings."""
    try:
        items = json.loads(value) if value else []
    except ValueError:
        items = None
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise errors.InvalidArgument(
            'must be a JSON array of strings, e.g. ["头条一", "headline two"]', field=where
        )
    return items


def parse_time(value: str, where: str) -> datetime | None:
    """A time field's value: ISO 8601 (a time without zone is in the service's time zone)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise errors.InvalidArgument(
            "must be an ISO 8601 time, e.g. 2026-03-05T14:00:00+08:00", field=where
        ) from None


# -- loading -------------------------------------------------------------------------------------


class _Reader:
    """Typed access to one mapping of a template file, naming the field on every error."""

    def __init__(self, file: str, data: Any, path: str, allowed: tuple[str, ...]) -> None:
        self.file = file
        self.path = path
        if not isinstance(data, dict):
            raise TemplateError(file, path or "(top)", "must be a mapping")
        for key in data:
            if key not in allowed:
                raise TemplateError(
                    file, self.at(str(key)), f"unknown key (allowed: {', '.join(allowed)})"
                )
        self.data = data

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, message: str) -> TemplateError:
        return TemplateError(self.file, self.at(key), message)

    def raw(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.fail(key, "must be a string")
        return str(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.string(key, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}, not {value!r}")
        return value

    def number(self, key: str, default: float | None = None, *, minimum: float = -1e6) -> float:
        value = self.data.get(key, default)
        if value is None:
            raise self.fail(key, "is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number, not {value!r}")
        if value < minimum or value > 1e6:
            raise self.fail(key, f"out of range: {value}")
        return float(value)

    def num_or_ref(self, key: str, fields: Mapping[str, FieldSpec], default: float | None) -> Num:
        value = self.data.get(key, default)
        if isinstance(value, str):
            m = FIELD_REF.fullmatch(value.strip())
            if not m:
                raise self.fail(key, f"must be a number or a {{field}} reference, not {value!r}")
            spec = fields.get(m.group(1))
            if spec is None:
                raise self.fail(key, f"refers to an undeclared field {m.group(1)!r}")
            if spec.kind != "number":
                raise self.fail(key, f"refers to field {m.group(1)!r}, which is not a number")
            return Ref(m.group(1))
        return self.number(key, default)

    def color(self, key: str, default: str | None = None) -> RGBA:
        value = self.string(key, default)
        try:
            rgb = ImageColor.getrgb(value)
        except ValueError:
            raise self.fail(key, f"is not a colour: {value!r}") from None
        return (rgb[0], rgb[1], rgb[2], rgb[3] if len(rgb) == 4 else 255)

    def font(self, key: str, default_font: str) -> str:
        value = self.string(key, default_font)
        try:
            ImageFont.truetype(value, 16)
        except OSError:
            raise self.fail(key, f"font not found or unreadable: {value!r}") from None
        return value

    def refs(self, key: str, text: str, fields: Mapping[str, FieldSpec]) -> None:
        for name in FIELD_REF.findall(text):
            if name not in fields:
                raise self.fail(key, f"refers to an undeclared field {name!r}")


_COMMON_KEYS = ("type", "x", "y", "width", "height", "opacity", "shadow")
_TEXT_KEYS = ("size", "color", "font", "align", "valign")
_ELEMENT_KEYS: dict[str, tuple[str, ...]] = {
    "box": (*_COMMON_KEYS, "color", "radius", "border_width", "border_color"),
    "text": (*_COMMON_KEYS, *_TEXT_KEYS, "text"),
    "image": (*_COMMON_KEYS, "path"),
    "clock": (*_COMMON_KEYS, *_TEXT_KEYS, "mode", "format", "target"),
    "ticker": (*_COMMON_KEYS, *_TEXT_KEYS, "items", "separator", "speed"),
}


def _shadow(r: _Reader) -> Shadow | None:
    raw = r.raw("shadow")
    if raw is None:
        return None
    s = _Reader(r.file, raw, r.at("shadow"), ("dx", "dy", "blur", "color"))
    return Shadow(
        dx=s.number("dx", 3),
        dy=s.number("dy", 3),
        blur=s.number("blur", 4, minimum=0),
        color=s.color("color", "#000000B0"),
    )


def _text_style(r: _Reader, default_font: str) -> TextStyle:
    return TextStyle(
        size=r.number("size", 40, minimum=4),
        color=r.color("color", "#FFFFFF"),
        font=r.font("font", default_font),
        align=r.choice("align", ALIGNS, "left"),
        valign=r.choice("valign", VALIGNS, "middle"),
    )


def _element(
    file: str, index: int, raw: Any, fields: Mapping[str, FieldSpec], default_font: str, base: Path
) -> Element:
    path = f"elements[{index}]"
    if not isinstance(raw, dict):
        raise TemplateError(file, path, "must be a mapping")
    kind = raw.get("type")
    if kind not in _ELEMENT_KEYS:
        raise TemplateError(
            file,
            f"{path}.type",
            f"unknown element {kind!r} (known: {', '.join(_ELEMENT_KEYS)})",
        )
    r = _Reader(file, raw, path, _ELEMENT_KEYS[kind])
    common: dict[str, Any] = {
        "index": index,
        "x": r.num_or_ref("x", fields, 0),
        "y": r.num_or_ref("y", fields, 0),
        "width": r.num_or_ref("width", fields, None if kind in ("box", "ticker") else 0),
        "height": r.num_or_ref("height", fields, None if kind in ("box", "ticker") else 0),
        "opacity": r.number("opacity", 1.0, minimum=0),
        "shadow": _shadow(r),
    }
    if common["opacity"] > 1:
        raise r.fail("opacity", "must be between 0 and 1")
    if kind == "box":
        return BoxElement(
            **common,
            color=r.color("color", "#000000C0"),
            radius=r.number("radius", 0, minimum=0),
            border_width=r.number("border_width", 0, minimum=0),
            border_color=r.color("border_color", "#FFFFFF"),
        )
    if kind == "text":
        text = r.string("text")
        r.refs("text", text, fields)
        return TextElement(**common, text=text, style=_text_style(r, default_font))
    if kind == "image":
        image_path = Path(r.string("path"))
        if not image_path.is_absolute():
            image_path = base / image_path
        if not image_path.is_file():
            raise r.fail("path", f"image not found: {str(image_path)!r}")
        return ImageElement(**common, path=str(image_path))
    if kind == "clock":
        mode = r.choice("mode", CLOCK_MODES, "time")
        target = r.string("target", "")
        r.refs("target", target, fields)
        if mode == "countdown" and not target:
            raise r.fail("target", "a countdown needs a target time or a {field} reference")
        return ClockElement(
            **common,
            mode=mode,
            format=r.string("format", "%H:%M:%S"),
            target=target,
            style=_text_style(r, default_font),
        )
    items = r.string("items", "items")
    spec = fields.get(items)
    if spec is None or spec.kind != "list":
        raise r.fail("items", f"must name a declared list field, not {items!r}")
    return TickerElement(
        **common,
        items=items,
        separator=r.string("separator", "   ●   "),
        speed=r.number("speed", 120, minimum=1),
        style=_text_style(r, default_font),
    )


def _animation(file: str, raw: Any, path: str) -> Animation:
    if raw is None:
        return Animation()
    r = _Reader(file, raw, path, ("type", "duration_ms", "from", "to", "easing", "distance"))
    kind = r.choice("type", ANIMATION_TYPES, "cut")
    duration = r.number("duration_ms", 0 if kind == "cut" else 500, minimum=0)
    if duration > MAX_DURATION_MS:
        raise r.fail("duration_ms", f"must be at most {MAX_DURATION_MS}")
    side_key = "to" if path.endswith("out") else "from"
    return Animation(
        type=kind,
        duration_ms=int(duration),
        direction=r.choice(side_key, DIRECTIONS, "left"),
        easing=r.choice("easing", EASINGS, "ease_out" if kind != "cut" else "linear"),
        distance=r.number("distance", 0, minimum=0),
    )


def _fields(file: str, raw: Any) -> dict[str, FieldSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TemplateError(file, "fields", "must be a mapping of field name to its description")
    out: dict[str, FieldSpec] = {}
    for name, spec_raw in raw.items():
        path = f"fields.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}", name):
            raise TemplateError(file, path, "a field name is lower case letters, digits and _")
        r = _Reader(file, spec_raw if spec_raw is not None else {}, path, ("kind", "default"))
        kind = r.choice("kind", FIELD_KINDS, "text")
        default_raw = r.raw("default", [] if kind == "list" else "")
        if kind == "list":
            if not isinstance(default_raw, list) or not all(
                isinstance(i, str) for i in default_raw
            ):
                raise r.fail("default", "a list field's default is a list of strings")
            default = json.dumps(default_raw, ensure_ascii=False)
        else:
            default = r.string("default", "")
        spec = FieldSpec(name, kind, default)
        try:
            check_value(spec, default, f"{path}.default")
        except errors.InvalidArgument as exc:
            raise TemplateError(file, exc.field, exc.message) from None
        out[name] = spec
    return out


def parse_template(
    text: str, file: str, *, default_font: str, base: Path | None = None
) -> Template:
    """Build a Template from a file's text; raise TemplateError naming the field at fault."""
    try:
        data = json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise TemplateError(
            file, "", f"not valid {'JSON' if file.endswith('.json') else 'YAML'}: {exc}"
        ) from None
    top = _Reader(file, data, "", ("name", "description", "fields", "elements", "animation"))
    name = top.string("name", Path(file).stem)
    if not _NAME.match(name):
        raise top.fail("name", f"must be lower case letters, digits, - and _: {name!r}")
    fields = _fields(file, top.raw("fields"))
    raw_elements = top.raw("elements")
    if not isinstance(raw_elements, list) or not raw_elements:
        raise top.fail("elements", "must be a non-empty list")
    base = base or Path(file).parent
    elements = tuple(
        _element(file, i, raw, fields, default_font, base) for i, raw in enumerate(raw_elements)
    )
    anim = _Reader(file, top.raw("animation", {}), "animation", ("in", "out"))
    return Template(
        name=name,
        description=top.string("description", ""),
        file=file,
        fields=fields,
        elements=elements,
        anim_in=_animation(file, anim.raw("in"), "animation.in"),
        anim_out=_animation(file, anim.raw("out"), "animation.out"),
    )


def load_template(path: Path, *, default_font: str) -> Template:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(str(path), "", f"cannot read: {exc}") from None
    return parse_template(text, str(path), default_font=default_font, base=path.parent)


SHIPPED_DIR = Path(__file__).parent / "templates"


class TemplateLibrary:
    """The templates in the shipped folder and the user's folder (a user's file wins by name).

    `scan()` re-reads changed files; a broken file is refused and reported, and the template it
    held before (if any) stays in use, so graphics on air keep going.
    """

    def __init__(self, folders: list[Path], *, default_font: str) -> None:
        self.folders = folders
        self.default_font = default_font
        self.templates: dict[str, Template] = {}
        self.errors: dict[str, TemplateError] = {}  # by file
        self._seen: dict[Path, tuple[int, int]] = {}
        self._by_file: dict[Path, str] = {}
        self._rank: dict[str, int] = {}  # index of the folder a template came from

    def get(self, name: str) -> Template:
        template = self.templates.get(name)
        if template is None:
            broken = [e for e in self.errors.values() if Path(e.file).stem == name]
            if broken:
                raise broken[0]
            raise errors.NotFound(
                f"no template {name!r} (known: {', '.join(sorted(self.templates))})",
                field="template",
            )
        return template

    def scan(self) -> list[str]:
        """Load new and changed files; return the names of templates that changed."""
        changed: list[str] = []
        present: set[Path] = set()
        for rank, folder in enumerate(self.folders):
            if not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                if path.suffix not in TEMPLATE_SUFFIXES or not path.is_file():
                    continue
                present.add(path)
                stat = path.stat()
                stamp = (stat.st_mtime_ns, stat.st_size)
                if self._seen.get(path) == stamp:
                    continue
                self._seen[path] = stamp
                try:
                    template = load_template(path, default_font=self.default_font)
                except TemplateError as exc:
                    self.errors[str(path)] = exc
                    continue
                self.errors.pop(str(path), None)
                self._by_file[path] = template.name
                if self._rank.get(template.name, -1) <= rank:
                    self.templates[template.name] = template
                    self._rank[template.name] = rank
                    changed.append(template.name)
        for gone in set(self._seen) - present:
            del self._seen[gone]
            self.errors.pop(str(gone), None)
            name = self._by_file.pop(gone, None)
            if name is not None and name not in self._by_file.values():
                self.templates.pop(name, None)
                self._rank.pop(name, None)
        return changed
