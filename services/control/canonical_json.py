"""Request bodies: JSON that is exactly the canonical proto3 JSON of a message, then the message.

protobuf's own parser is lenient in ways an API should not be (it takes `null` for any field,
numbers in strings for 32-bit integers, `true` for a float, `[]` for a message, snake_case names).
`parse` first checks the body against the message's descriptor with the rules that
`json_schema.py` writes into the OpenAPI document, then parses it with `services.common.bus.decode`,
so whatever the document calls invalid is refused, with the offending field named, before any
command is built.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any, TypeVar

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import decode
from services.control.json_schema import (
    FLOATS,
    INT32,
    INT64,
    INT64_PATTERN,
    NON_FINITE,
    SIGNED_32,
    SIGNED_64,
    UINT32,
    UINT64,
    UINT64_PATTERN,
    UNSIGNED_32,
    UNSIGNED_64,
    descriptor_of,
    enum_names,
    enum_of,
    is_map,
    message_of,
    real_oneofs,
)

M = TypeVar("M", bound=Message)
F = FieldDescriptor
_INT64 = re.compile(INT64_PATTERN)
_UINT64 = re.compile(UINT64_PATTERN)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise errors.InvalidArgument(f"{key!r} appears twice", field=key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise errors.InvalidArgument(f'{name} is not JSON (write the string "{name}")')


def load(body: bytes) -> Any:
    """Strict JSON: UTF-8, no duplicate keys, no bare NaN or Infinity; InvalidArgument for
    anything else, however deep or long (no body is nested or numbered like that by right)."""
    try:
        return json.loads(
            body.decode(), object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise errors.InvalidArgument("the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise errors.InvalidArgument(f"the body is not JSON: {exc.msg}") from None
    except RecursionError:  # the decoder's own bound on nesting (about 1000 levels)
        raise errors.InvalidArgument("the body is nested too deeply") from None
    except ValueError:  # an integer over Python's 4300 digits
        raise errors.InvalidArgument("the body has a number with too many digits") from None


def parse(body: bytes, message_type: type[M]) -> M:
    """The message a request body holds; InvalidArgument naming the field otherwise."""
    data = load(body)
    check(data, descriptor_of(message_type))
    return decode(json.dumps(data).encode(), message_type)


def check(data: Any, descriptor: Descriptor, path: str = "") -> None:
    """Raise InvalidArgument unless `data` is canonical JSON of the message `descriptor`."""
    if not isinstance(data, dict):
        where = path or "the body"
        raise errors.InvalidArgument(f"{where} must be a JSON object", field=path)
    fields = {f.json_name: f for f in descriptor.fields}
    for key, value in data.items():
        field = fields.get(key)
        at = f"{path}.{key}" if path else key
        if field is None:
            raise errors.InvalidArgument(f"{descriptor.full_name} has no field {key!r}", field=at)
        _field(value, field, at)
    for oneof in real_oneofs(descriptor):
        present = [f.json_name for f in oneof.fields if f.json_name in data]
        if len(present) > 1:
            raise errors.InvalidArgument(
                f"at most one of {', '.join(present)} may be set", field=path or present[1]
            )


def _field(value: Any, field: FieldDescriptor, path: str) -> None:
    if is_map(field):
        if not isinstance(value, dict):
            raise errors.InvalidArgument(f"{path} must be an object", field=path)
        entry = message_of(field).fields_by_name["value"]
        for key, item in value.items():
            _singular(item, entry, f"{path}.{key}")
    elif field.is_repeated:
        if not isinstance(value, list):
            raise errors.InvalidArgument(f"{path} must be an array", field=path)
        for i, item in enumerate(value):
            _singular(item, field, f"{path}[{i}]")
    else:
        _singular(value, field, path)


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _within(value: Any, bounds: tuple[int, int]) -> bool:
    return _is_integer(value) and bounds[0] <= value <= bounds[1]


def _finite_number(value: Any) -> bool:
    """A JSON number a double holds (an integer literal may be far larger than any)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -sys.float_info.max <= value <= sys.float_info.max
    return isinstance(value, float) and math.isfinite(value)


def _singular(value: Any, field: FieldDescriptor, path: str) -> None:
    kind = field.type
    if kind == F.TYPE_MESSAGE:
        check(value, message_of(field), path)
        return
    if kind == F.TYPE_ENUM:
        names = enum_names(enum_of(field))
        ok, want = isinstance(value, str) and value in names, f"one of {', '.join(names)}"
    elif kind in (F.TYPE_STRING, F.TYPE_BYTES):
        ok, want = isinstance(value, str), "a string"
    elif kind == F.TYPE_BOOL:
        ok, want = isinstance(value, bool), "true or false"
    elif kind in SIGNED_32 | UNSIGNED_32:
        bounds = INT32 if kind in SIGNED_32 else UINT32
        ok, want = _within(value, bounds), f"an integer from {bounds[0]} to {bounds[1]}"
    elif kind in SIGNED_64 | UNSIGNED_64:
        bounds, pattern = (INT64, _INT64) if kind in SIGNED_64 else (UINT64, _UINT64)
        as_text = isinstance(value, str) and pattern.match(value) is not None
        ok, want = as_text or _within(value, bounds), "an integer (or its decimal string)"
    elif kind in FLOATS:
        ok = _finite_number(value) or (isinstance(value, str) and value in NON_FINITE)
        want = 'a number, "NaN", "Infinity" or "-Infinity"'
    else:
        ok, want = False, "a value of a type this API does not take"
    if not ok:
        raise errors.InvalidArgument(f"{path} must be {want}", field=path)
