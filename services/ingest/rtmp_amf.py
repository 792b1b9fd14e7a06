"""AMF0, the value encoding of RTMP commands (`connect`, `publish`, `_result`, `onStatus`...).

Only what a publishing encoder sends and what the server answers: numbers, booleans, strings,
objects, ECMA and strict arrays, null/undefined, dates and long strings. AMF3 is not spoken: the
server answers `connect` with `objectEncoding: 0`, so clients stay on AMF0.
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT = 0x00, 0x01, 0x02, 0x03
NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END = 0x05, 0x06, 0x08, 0x09
STRICT_ARRAY, DATE, LONG_STRING = 0x0A, 0x0B, 0x0C
MAX_DEPTH = 16


class AmfError(ValueError):
    """The bytes are not AMF0 this decoder understands."""


def encode(*values: Any) -> bytes:
    return b"".join(_encode(v) for v in values)


def _encode(value: Any) -> bytes:
    if value is None:
        return bytes([NULL])
    if isinstance(value, bool):
        return bytes([BOOLEAN, int(value)])
    if isinstance(value, int | float):
        return bytes([NUMBER]) + struct.pack(">d", float(value))
    if isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            return bytes([LONG_STRING]) + struct.pack(">I", len(raw)) + raw
        return bytes([STRING]) + struct.pack(">H", len(raw)) + raw
    if isinstance(value, dict):
        body = b"".join(_key(k) + _encode(v) for k, v in value.items())
        return bytes([OBJECT]) + body + b"\x00\x00" + bytes([OBJECT_END])
    if isinstance(value, list | tuple):
        return (
            bytes([STRICT_ARRAY])
            + struct.pack(">I", len(value))
            + b"".join(_encode(v) for v in value)
        )
    raise TypeError(f"cannot encode {type(value).__name__} as AMF0")


def _key(key: str) -> bytes:
    raw = key.encode()
    return struct.pack(">H", len(raw)) + raw


def decode(data: bytes) -> list[Any]:
    """Every value in `data`, in order (raises AmfError on truncated or unknown input)."""
    values: list[Any] = []
    pos = 0
    while pos < len(data):
        value, pos = _decode(data, pos, 0)
        values.append(value)
    return values


def _take(data: bytes, pos: int, n: int) -> bytes:
    if pos + n > len(data):
        raise AmfError("truncated AMF0 value")
    return data[pos : pos + n]


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > MAX_DEPTH:
        raise AmfError("AMF0 nesting too deep")
    marker = _take(data, pos, 1)[0]
    pos += 1
    if marker == NUMBER:
        return struct.unpack(">d", _take(data, pos, 8))[0], pos + 8
    if marker == BOOLEAN:
        return bool(_take(data, pos, 1)[0]), pos + 1
    if marker == STRING:
        (n,) = struct.unpack(">H", _take(data, pos, 2))
        return _take(data, pos + 2, n).decode(errors="replace"), pos + 2 + n
    if marker == LONG_STRING:
        (n,) = struct.unpack(">I", _take(data, pos, 4))
        return _take(data, pos + 4, n).decode(errors="replace"), pos + 4 + n
    if marker in (NULL, UNDEFINED):
        return None, pos
    if marker == OBJECT:
        return _properties(data, pos, depth)
    if marker == ECMA_ARRAY:
        return _properties(data, pos + 4, depth)  # the count is a hint; the end marker rules
    if marker == STRICT_ARRAY:
        (n,) = struct.unpack(">I", _take(data, pos, 4))
        pos += 4
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        return items, pos
    if marker == DATE:
        (ms,) = struct.unpack(">d", _take(data, pos, 8))
        return ms, pos + 10
    raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")


def _properties(data: bytes, pos: int, depth: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {}
    while True:
        (n,) = struct.unpack(">H", _take(data, pos, 2))
        pos += 2
        if n == 0 and _take(data, pos, 1)[0] == OBJECT_END:
            return out, pos + 1
        key = _take(data, pos, n).decode(errors="replace")
        out[key], pos = _decode(data, pos + n, depth + 1)
