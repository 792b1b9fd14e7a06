"""AMF0, the value encoding of RTMP commands (`connect`, `publish`, `_result`, `onStatus`...).

Only what a publishing encoder sends and what the server answers: numbers, booleans, strings,
objects, ECMA and strict arrays, null/undefined, dates and long strings. AMF3 is not spoken: the
server answers `connect` with `objectEncoding: 0`, so clients stay on AMF0.

Decoding is bounded (`MAX_VALUES`, `MAX_DEPTH`): a command is decoded on the event loop, so no
bytes may make it work long; the message carrying it is bounded too (`rtmp_chunks.ChunkLimits`).
"""

from __future__ import annotations

import struct
from typing import Any

NUMBER, BOOLEAN, STRING, OBJECT = 0x00, 0x01, 0x02, 0x03
NULL, UNDEFINED, ECMA_ARRAY, OBJECT_END = 0x05, 0x06, 0x08, 0x09
STRICT_ARRAY, DATE, LONG_STRING = 0x0A, 0x0B, 0x0C
MAX_DEPTH = 16
# `connect` carries about 10 values, ffmpeg's onMetaData about 20.
MAX_VALUES = 1024


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
    if len(raw) > 0xFFFF:
        raise AmfError(f"an object key of {len(raw)} bytes does not fit AMF0 (65535 at most)")
    return struct.pack(">H", len(raw)) + raw


def decode(data: bytes, *, max_values: int = MAX_VALUES, max_depth: int = MAX_DEPTH) -> list[Any]:
    """Every value in `data`, in order (raises AmfError on truncated or unknown input).

    Bounded whatever the bytes: past `max_values` values (each property and array item counts)
    or `max_depth` levels of nesting it raises, so the work is at most linear in `max_values`;
    a strict array cannot announce more items than bytes remain.
    """
    reader = _Reader(data, max_values, max_depth)
    values: list[Any] = []
    while reader.pos < len(data):
        values.append(reader.value(0))
    return values


class _Reader:
    """One decode: the bytes, where it is in them, and what is left of its value budget."""

    def __init__(self, data: bytes, max_values: int, max_depth: int) -> None:
        self.data = data
        self.pos = 0
        self.values_left = max_values
        self.max_values = max_values
        self.max_depth = max_depth

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise AmfError("truncated AMF0 value")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def value(self, depth: int) -> Any:
        if depth > self.max_depth:
            raise AmfError(f"AMF0 nesting deeper than {self.max_depth}")
        self.values_left -= 1
        if self.values_left < 0:
            raise AmfError(f"over {self.max_values} AMF0 values")
        marker = self.take(1)[0]
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return bool(self.take(1)[0])
        if marker == STRING:
            (n,) = struct.unpack(">H", self.take(2))
            return self.take(n).decode(errors="replace")
        if marker == LONG_STRING:
            (n,) = struct.unpack(">I", self.take(4))
            return self.take(n).decode(errors="replace")
        if marker in (NULL, UNDEFINED):
            return None
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # the count is a hint; the end marker rules
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            (n,) = struct.unpack(">I", self.take(4))
            if n > len(self.data) - self.pos:  # every item takes a byte at least
                raise AmfError(f"a strict array of {n} items in {len(self.data) - self.pos} bytes")
            return [self.value(depth + 1) for _ in range(n)]
        if marker == DATE:
            (ms,) = struct.unpack(">d", self.take(8))
            self.take(2)  # time zone, unused
            return ms
        raise AmfError(f"unsupported AMF0 marker 0x{marker:02x}")

    def properties(self, depth: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        while True:
            (n,) = struct.unpack(">H", self.take(2))
            if n == 0 and self.data[self.pos : self.pos + 1] == bytes([OBJECT_END]):
                self.pos += 1
                return out
            key = self.take(n).decode(errors="replace")
            out[key] = self.value(depth + 1)
