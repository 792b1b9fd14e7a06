"""The RTMP targets' properties: bytes a publisher may send, through the parsers' public entry
points only (`ChunkParser.feed`, `handshake_reply`, `rtmp_amf.decode`), so a change inside the
parsers needs no change here. Each function returns quietly or raises AssertionError (or the
unexpected exception itself) naming the broken property.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Any

from services.ingest import rtmp_amf, rtmp_chunks
from services.ingest.rtmp_amf import AmfError
from services.ingest.rtmp_chunks import ChunkError, ChunkParser, ChunkWriter, Message

# Where a re-encoded message is written: a chunk stream id a one-byte header can carry.
REENCODE_CSID = 3


def _parse(parser: ChunkParser, pieces: list[bytes]) -> tuple[list[Message], ChunkError | None]:
    """The messages `pieces` fed one after the other give, and the refusal that ended them."""
    messages: list[Message] = []
    try:
        for piece in pieces:
            messages += parser.feed(piece)
    except ChunkError as exc:
        return messages, exc
    return messages, None


def _split(data: bytes) -> list[bytes]:
    """`data` cut at a few points that depend on the data only (so a run replays exactly)."""
    rng = random.Random(zlib.crc32(data))
    cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(1, 8))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def chunk_stream(data: bytes) -> None:
    """What a publisher sends after the handshake, fed to the chunk parser.

    * only ChunkError refuses it (anything else escaping `feed` is a bug);
    * bytes may arrive split anywhere: the same bytes fed in pieces give the same messages,
      and are refused if and only if they are refused whole;
    * every message is within the wire's ranges and the parser's size limit;
    * a message `ChunkWriter` writes reads back the same (the server's own direction);
    * under the limits before a publish (`ChunkLimits.before_publish`), the same.
    """
    whole, refused = _parse(ChunkParser(), [data])
    pieces, refused_in_pieces = _parse(ChunkParser(), _split(data))
    assert (refused is None) == (refused_in_pieces is None), (refused, refused_in_pieces)
    if refused is None:
        assert pieces == whole, "split input parsed differently"
    limit = max(
        getattr(rtmp_chunks, "MAX_MESSAGE_BYTES", 0), getattr(rtmp_chunks, "MAX_COMMAND_BYTES", 0)
    )
    for message in whole:
        assert 0 <= message.type_id <= 0xFF
        assert 0 <= message.stream_id <= 0xFFFFFFFF
        assert 0 <= message.timestamp <= 0xFFFFFFFF
        assert not limit or len(message.payload) <= limit, len(message.payload)
        writer = ChunkWriter()
        again = ChunkParser().feed(writer.encode(REENCODE_CSID, message))
        assert again == [message], (message, again)
    limits = getattr(rtmp_chunks, "ChunkLimits", None)
    if limits is not None:  # the server's limits until a publish is accepted
        commands, _refused = _parse(ChunkParser(limits().before_publish()), [data])
        assert all(len(m.payload) <= limits().max_command_bytes for m in commands)


def handshake(data: bytes) -> None:
    """C0 + C1: a reply of S0 + S1 + S2 echoing C1, or ChunkError."""
    try:
        reply = rtmp_chunks.handshake_reply(data)
    except ChunkError:
        return
    size = rtmp_chunks.HANDSHAKE_SIZE
    assert len(data) == 1 + size and data[0] == rtmp_chunks.RTMP_VERSION
    assert len(reply) == 1 + 2 * size
    assert reply[0] == rtmp_chunks.RTMP_VERSION
    assert reply[1 + size :] == data[1:], "S2 must echo C1"


def _same(a: Any, b: Any) -> bool:
    """Equality of decoded AMF0 values in which NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _count(values: list[Any]) -> int:
    """How many values the decoder counted for these (each property and item is one)."""
    n = 0
    for value in values:
        n += 1
        if isinstance(value, dict):
            n += _count(list(value.values()))
        elif isinstance(value, list):
            n += _count(value)
    return n


def amf0(data: bytes) -> None:
    """The body of a command or data message, decoded as AMF0.

    * only AmfError refuses it;
    * what it decodes to is encoded again or refused with AmfError (a key that is not UTF-8
      decodes with replacement characters and can outgrow AMF0's 65535 bytes; the server echoes
      only a numeric transaction id), and what is encoded decodes back to the same values;
    * decoding consumes exactly the bytes: one more value appended is one more value decoded
      (a value cut short is refused, never taken with bytes that follow it).
    """
    try:
        values = rtmp_amf.decode(data)
    except AmfError:
        return
    try:
        encoded = rtmp_amf.encode(*values)
    except AmfError:
        return
    again = rtmp_amf.decode(encoded)
    assert _same(again, values), (values, again)
    if _count(values) < getattr(rtmp_amf, "MAX_VALUES", math.inf):
        extended = rtmp_amf.decode(data + rtmp_amf.encode("end"))
        assert _same(extended, [*values, "end"]), (values, extended)
