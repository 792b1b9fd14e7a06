"""The command JSON target: bodies POSTed to the control room's command routes (and its login).

`canonical_json.parse(body, T)` must return a T or raise InvalidArgument (the 400 naming the
field); `canonical_json.load` the same for any JSON body. What it accepts round-trips: the
message's canonical JSON (`bus.encode`, what the services write) is accepted again and means the
same message, and encoding that gives the same text. Bodies are drawn from each command's
protobuf descriptor, with right and wrong values for every field, then sometimes broken as
text (duplicate keys, NaN, huge numbers, deep nesting, bytes that are not UTF-8...).
"""

from __future__ import annotations

import base64
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

from services.common import errors
from services.common.bus import encode
from services.control import canonical_json
from services.control.json_schema import (
    FLOATS,
    INT32,
    INT64,
    NON_FINITE,
    SIGNED_32,
    SIGNED_64,
    UINT32,
    UINT64,
    UNSIGNED_32,
    descriptor_of,
    enum_names,
    enum_of,
    is_map,
    message_of,
)
from services.control.routes import ROUTES

CORPUS = Path(__file__).parent / "corpus" / "command_json"
F = FieldDescriptor
MAX_DEPTH = 4  # message nesting drawn; deeper levels are left out
Body = tuple[type[Message], bytes]


@cache
def command_types() -> dict[str, type[Message]]:
    """Every message a route takes as its body, by full name."""
    types = {r.body for r in ROUTES if isinstance(r.body, type)}
    return {descriptor_of(t).full_name: t for t in sorted(types, key=lambda t: t.__name__)}


def seed_body(path: Path) -> Body:
    """A corpus file `<full message name>--<what>.json` as (message type, body)."""
    return command_types()[path.name.split("--")[0]], path.read_bytes()


# -- drawing bodies -------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _edges(bounds: tuple[int, int]) -> st.SearchStrategy[int]:
    low, high = bounds
    return st.sampled_from([low, high, low - 1, high + 1, 0, 1, -1])


@cache
def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values the canonical mapping allows for `field`'s type, edges included."""
    kind = field.type
    if kind == F.TYPE_ENUM:
        return st.sampled_from(enum_names(enum_of(field)))
    if kind == F.TYPE_STRING:
        return st.text(max_size=20)
    if kind == F.TYPE_BYTES:
        return st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
    if kind == F.TYPE_BOOL:
        return st.booleans()
    if kind in SIGNED_32 | UNSIGNED_32:
        bounds = INT32 if kind in SIGNED_32 else UINT32
        ints = st.integers(*bounds) | _edges(bounds)
        return ints | ints.map(float)  # 3.0 is an integer in JSON
    if kind in SIGNED_64 | {F.TYPE_UINT64, F.TYPE_FIXED64}:
        bounds = INT64 if kind in SIGNED_64 else UINT64
        ints = st.integers(*bounds) | _edges(bounds)
        return ints | ints.map(str) | ints.map(float)
    if kind in FLOATS:
        return (
            st.floats(allow_nan=False, allow_infinity=False)
            | st.sampled_from(NON_FINITE)
            | st.integers()
            | st.sampled_from([10**400, -(10**400), 1e308, 5e-324])
        )
    return _json


@cache
def _value(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if is_map(field):
        entry = message_of(field)
        key = entry.fields_by_name["key"]
        keys = st.text(max_size=6) if key.type == F.TYPE_STRING else _scalar(key).map(str)
        return st.dictionaries(keys, _singular(entry.fields_by_name["value"], depth), max_size=3)
    if field.is_repeated:
        return st.lists(_singular(field, depth), max_size=3)
    return _singular(field, depth)


@cache
def _singular(field: FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    if field.type == F.TYPE_MESSAGE:
        return message_json(message_of(field), depth + 1)
    return _scalar(field)


@st.composite
def message_json(draw: st.DrawFn, descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    """A JSON object for `descriptor`: mostly right values, some of any type, now and then a
    field protobuf's own parser would take but the API refuses (snake_case, unknown)."""
    if depth > MAX_DEPTH:
        return {}
    fields = list(descriptor.fields)
    chosen = draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)) if fields else []
    out: dict[str, Any] = {}
    for field in chosen:
        right = draw(st.integers(0, 9)) < 9  # Hypothesis favours small draws
        out[field.json_name] = draw(_value(field, depth) if right else _json)
    if draw(st.integers(0, 9)) == 9:
        odd = draw(st.sampled_from([f.name for f in fields] or ["x"]) | st.text(max_size=6))
        out[odd] = draw(_json)
    return out


def _break(text: str, how: str, data: st.DataObject) -> bytes:
    """`text` broken the way `how` says, as bytes."""
    if how == "duplicate" and text.startswith("{"):
        key = _FIRST_KEY.match(text)
        return ("{" + (key.group(1) if key else '"x"') + ": null, " + text[1:]).encode()
    if how == "constant":
        return text.replace(
            "null", data.draw(st.sampled_from(["NaN", "Infinity", "-Infinity"]))
        ).encode()
    if how == "huge":
        digits = "9" * data.draw(st.sampled_from([20, 400, 4300, 4301, 10_000]))
        return ('{"x": ' + digits + "}" if text == "{}" else text.replace("0", digits, 1)).encode()
    if how == "nesting":
        n = data.draw(st.sampled_from([10, 1_000, 20_000]))
        opener, closer = data.draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        return (opener * n + text + closer * n).encode()
    if how == "bytes":
        raw = text.encode()
        at = data.draw(st.integers(0, len(raw)))
        return (
            raw[:at]
            + data.draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00"]))
            + raw[at:]
        )
    if how == "surrogate":
        return text.replace('""', '"\\ud800"', 1).replace(': "', ': "\\udfff', 1).encode()
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "trailing":
        return (text + data.draw(st.sampled_from([" ", "x", "\x00", "}", "\n{}"]))).encode()
    if how == "truncated":
        return text[: data.draw(st.integers(0, len(text)))].encode()
    return text.encode()


_FIRST_KEY = re.compile(r'\{\s*("(?:[^"\\]|\\.)*")\s*:')
_BREAKS = [
    "duplicate",
    "constant",
    "huge",
    "nesting",
    "bytes",
    "surrogate",
    "bom",
    "trailing",
    "truncated",
]


@cache
def _seeds() -> list[Body]:
    return [seed_body(p) for p in sorted(CORPUS.iterdir())]


@st.composite
def _body(draw: st.DrawFn) -> Body:
    types = command_types()
    seeds = _seeds()
    if seeds and draw(st.integers(0, 3)) == 3:  # a real body, as it is or broken below
        message_type, raw = draw(st.sampled_from(seeds))
        text = raw.decode(errors="replace")
    else:
        message_type = types[draw(st.sampled_from(sorted(types)))]
        value = draw(message_json(descriptor_of(message_type)))
        if draw(st.integers(0, 9)) == 9:
            value = draw(_json)  # not even an object, sometimes
        text = json.dumps(value, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 3)) == 3:
        return message_type, _break(text, draw(st.sampled_from(_BREAKS)), draw(st.data()))
    return message_type, text.encode()


def command_bodies() -> st.SearchStrategy[Body]:
    return _body()


# -- the property ---------------------------------------------------------------------------------


def _wire(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def command_body(drawn: Body) -> None:
    """InvalidArgument, or a message whose canonical JSON is accepted again as the same."""
    message_type, body = drawn
    try:
        canonical_json.load(body)
    except errors.InvalidArgument as exc:
        assert exc.message
    try:
        message = canonical_json.parse(body, message_type)
    except errors.InvalidArgument as exc:
        assert exc.message
        return
    assert isinstance(message, message_type)
    text = encode(message)
    again = canonical_json.parse(text, message_type)
    assert _wire(again) == _wire(message), (body, text)
    # The same JSON again (a map's keys may come out in another order: JSON objects are unordered).
    assert json.loads(encode(again)) == json.loads(text)
