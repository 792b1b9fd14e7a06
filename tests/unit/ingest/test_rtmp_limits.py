"""RTMP before the key is accepted, without sockets: the chunk stream's limits, bounded AMF0
decoding, the connection gate, stream-key tries and the refusal log."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from structlog.testing import CapturingLogger

from services.common.rate_limiter import RateLimiter
from services.ingest import metrics, rtmp_amf
from services.ingest.rtmp_chunks import (
    ABORT,
    AUDIO,
    COMMAND_AMF0,
    MAX_CHUNK_STREAMS,
    MESSAGES_BEFORE_PUBLISH,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkError,
    ChunkLimits,
    ChunkParser,
    ChunkWriter,
    Message,
    control,
)
from services.ingest.rtmp_limits import (
    EVICTED,
    KEY_RATE_ADDRESS,
    KEY_RATE_TOTAL,
    PER_ADDRESS,
    TOTAL,
    ConnectionGate,
    KeyTries,
    RefusalLog,
    RtmpLimits,
    address_key,
)
from services.ingest.settings import IngestSettings, SettingsError

CORPUS = Path(__file__).parents[2] / "fuzz" / "corpus" / "rtmp_chunks"
NEGOTIATING = RtmpLimits().negotiating_chunks()


def header(csid: int, length: int, type_id: int, stream_id: int = 0) -> bytes:
    """A type-0 chunk header (csid < 64, no extended timestamp)."""
    return (
        bytes([csid])
        + b"\x00\x00\x00"
        + length.to_bytes(3, "big")
        + bytes([type_id])
        + struct.pack("<I", stream_id)
    )


def reason_of(parser: ChunkParser, data: bytes) -> str:
    with pytest.raises(ChunkError) as caught:
        parser.feed(data)
    return caught.value.reason


# -- the chunk stream ------------------------------------------------------------------------


def test_ffmpeg_publishes_within_the_limits() -> None:
    """ffmpeg's real bytes (commands, then media) pass: negotiating limits up to `publish`,
    publishing limits after it."""
    wire = (CORPUS / "ffmpeg-5.1.bin").read_bytes()
    parser = ChunkParser(NEGOTIATING)
    names: list[str] = []
    media = 0
    for offset in range(0, len(wire), 100):
        for message in parser.feed(wire[offset : offset + 100]):
            if message.type_id == COMMAND_AMF0:
                names.append(rtmp_amf.decode(message.payload)[0])
                if names[-1] == "publish":
                    parser.limits = RtmpLimits().publishing_chunks()
            media += message.type_id in (AUDIO, VIDEO)
    assert names == ["connect", "releaseStream", "FCPublish", "createStream", "publish"]
    assert media >= 3  # the seed keeps the first 12,000 bytes after the handshake


def test_oversized_message_is_refused_at_its_header() -> None:
    parser = ChunkParser(NEGOTIATING)
    # An 8 MiB command: refused from its 12-byte header, before any body is held.
    assert reason_of(parser, header(3, 8 * 1024 * 1024, COMMAND_AMF0)) == "message_size"
    assert parser.held_bytes == 12
    limit = NEGOTIATING.max_command_bytes
    assert reason_of(ChunkParser(NEGOTIATING), header(3, limit + 1, COMMAND_AMF0)) == (
        "message_size"
    )
    ChunkParser(NEGOTIATING).feed(header(3, limit, COMMAND_AMF0))  # at the limit: waits
    # Once publishing, media up to its own limit; commands stay small.
    publishing = RtmpLimits().publishing_chunks()
    ChunkParser(publishing).feed(header(6, publishing.max_media_bytes, VIDEO))
    assert reason_of(ChunkParser(publishing), header(3, limit + 1, COMMAND_AMF0)) == (
        "message_size"
    )


def test_no_media_before_publishing() -> None:
    assert reason_of(ChunkParser(NEGOTIATING), header(6, 10, VIDEO)) == "media_before_publish"
    assert reason_of(ChunkParser(NEGOTIATING), header(4, 10, AUDIO)) == "media_before_publish"


def test_tiny_chunks_before_publishing_are_refused() -> None:
    # 1-byte chunks would make every byte a round of parsing.
    tiny = ChunkWriter().encode(2, control(SET_CHUNK_SIZE, 127))
    assert reason_of(ChunkParser(NEGOTIATING), tiny) == "chunk_size"
    parser = ChunkParser(NEGOTIATING)
    parser.feed(ChunkWriter().encode(2, control(SET_CHUNK_SIZE, 128)))
    assert parser.chunk_size == 128
    publishing = ChunkParser(RtmpLimits().publishing_chunks())
    publishing.feed(tiny)
    assert publishing.chunk_size == 127


def test_chunk_streams_are_capped() -> None:
    # Empty messages on ever new chunk streams (2-byte basic headers reach 65,599 of them).
    wire = b"".join(
        bytes([0x00, csid - 64]) + header(0, 0, COMMAND_AMF0)[1:]
        for csid in range(64, 64 + MAX_CHUNK_STREAMS + 1)
    )
    parser = ChunkParser()
    assert reason_of(parser, wire) == "chunk_streams"


def test_partial_messages_are_capped_in_streams_and_bytes() -> None:
    limits = ChunkLimits(max_partial_streams=4, max_partial_bytes=1000, max_media_bytes=900)
    # A first chunk (128 bytes) of a 300-byte message on each of five chunk streams.
    parser = ChunkParser(limits)
    wire = b"".join(header(4 + i, 300, VIDEO) + bytes(128) for i in range(4))
    parser.feed(wire)
    assert parser.held_bytes == 4 * 128
    assert reason_of(parser, header(9, 300, VIDEO)) == "partial_streams"
    # 900-byte messages: the second cannot stay partial past 1000 bytes held.
    parser = ChunkParser(limits)
    parser.feed(header(4, 900, VIDEO) + bytes(128) + b"\xc4" + bytes(128) * 1)
    parser.feed(b"".join(b"\xc4" + bytes(128) for _ in range(5)))  # 896 bytes held
    assert reason_of(parser, header(5, 900, VIDEO)) == "partial_bytes"
    # Completing or aborting a message gives its bytes back.
    parser = ChunkParser(limits)
    parser.feed(header(4, 300, VIDEO) + bytes(128))
    writer = ChunkWriter()
    parser.feed(writer.encode(2, control(ABORT, 4)))
    assert parser.held_bytes == 0
    for i in range(4):
        parser.feed(header(4 + i, 300, VIDEO) + bytes(128))


def test_messages_and_bytes_before_publishing_are_capped() -> None:
    writer = ChunkWriter()
    tiny = writer.encode(3, Message(COMMAND_AMF0, 0, 0, rtmp_amf.encode("x")))
    parser = ChunkParser(NEGOTIATING)
    parser.feed(tiny * MESSAGES_BEFORE_PUBLISH)
    assert reason_of(parser, tiny) == "messages_before_publish"
    parser = ChunkParser(NEGOTIATING)
    too_much = NEGOTIATING.max_bytes + 1
    assert reason_of(parser, bytes(too_much)) == "bytes_before_publish"
    assert parser.held_bytes == 0  # refused before it was buffered


# -- AMF0 ------------------------------------------------------------------------------------


def strict_array(count: int, items: bytes) -> bytes:
    return bytes([rtmp_amf.STRICT_ARRAY]) + struct.pack(">I", count) + items


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("million nulls", strict_array(1_000_000, b"\x05" * 1_000_000), "over 1024 AMF0 values"),
        ("count past the bytes", strict_array(0xFFFFFFFF, b"\x05" * 10), "strict array of"),
        ("deep nesting", strict_array(1, b"") * 100_000 + b"\x05", "nesting deeper than 16"),
        (
            "wide object",
            b"\x03" + b"".join(b"\x00\x01k\x05" for _ in range(5000)) + b"\x00\x00\x09",
            "over 1024 AMF0 values",
        ),
        ("4 GiB string in 10 bytes", b"\x0c\xff\xff\xff\xff" + b"x" * 10, "truncated"),
    ],
)
def test_amf0_bombs_are_refused_quickly(name: str, data: bytes, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(rtmp_amf.AmfError, match=message):
        rtmp_amf.decode(data)
    assert time.perf_counter() - started < 0.05, name  # measured: well under 1 ms each


def test_amf0_decodes_up_to_its_bounds() -> None:
    assert rtmp_amf.decode(strict_array(1023, b"\x05" * 1023)) == [[None] * 1023]
    nested: list[object] = []
    for _ in range(16):
        nested = [nested]
    assert rtmp_amf.decode(rtmp_amf.encode(nested)) == [nested]
    big = "字" * 20000  # a long string is one value: its bytes are bounded by the message
    assert rtmp_amf.decode(rtmp_amf.encode(big)) == [big]


# -- connections, key tries, log lines -------------------------------------------------------


def test_address_keys() -> None:
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_gate_caps_per_address_and_displaces_the_largest_holder() -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1
        return now[0]

    gate: ConnectionGate[str] = ConnectionGate(4, 3, clock=clock)
    for name in ("a1", "a2", "a3"):
        assert gate.enter("A", name) == ("", None)
    assert gate.enter("A", "a4") == (PER_ADDRESS, None)
    assert gate.enter("B", "b1") == ("", None)
    assert gate.total == 4
    # Full: a newcomer from C, which holds none, takes the oldest slot of A (the largest).
    assert gate.enter("C", "c1") == ("", ("A", "a1"))
    assert (gate.held("A"), gate.total) == (2, 4)
    # B holds 1 and A 2: not two more, so B's next is refused rather than displacing A's.
    assert gate.enter("B", "b2") == (TOTAL, None)
    assert gate.enter("A", "a5") == (TOTAL, None)
    # D, fresh, displaces A's oldest; then everyone holds 1 and E, fresh, takes the oldest.
    assert gate.enter("D", "d1") == ("", ("A", "a2"))
    assert gate.enter("E", "e1") == ("", ("A", "a3"))
    assert (gate.held("A"), gate.held("E"), gate.total) == (0, 1, 4)
    gate.leave("A", "a1")  # displaced already: nothing
    gate.leave("B", "b1")
    assert gate.total == 3
    assert gate.enter("B", "b3") == ("", None)


def test_key_tries_per_address_then_in_all() -> None:
    t = [0.0]
    tries = KeyTries(
        RateLimiter(0.5, 2, clock=lambda: t[0]), RateLimiter(1.0, 3, clock=lambda: t[0])
    )
    assert [tries.take("A") for _ in range(3)] == ["", "", KEY_RATE_ADDRESS]
    assert [tries.take("B") for _ in range(2)] == ["", KEY_RATE_TOTAL]
    t[0] = 2.0  # a token back for A (0.5/s) and two for everyone (1/s)
    assert tries.take("A") == ""


def test_refusals_are_all_counted_and_logged_once_a_second() -> None:
    t = [100.0]
    lines = CapturingLogger()
    log = RefusalLog(1.0, clock=lambda: t[0], logger=lines)
    counter = metrics.RTMP_REFUSED.labels(EVICTED)
    before = counter._value.get()
    for _ in range(5):
        log.refused("rtmp_connection_refused", EVICTED, peer="192.0.2.7")
    t[0] += 1.0
    log.refused("rtmp_connection_refused", EVICTED, peer="192.0.2.7")
    assert counter._value.get() - before == 6
    assert [(c.args, c.kwargs["reason"], c.kwargs["unlogged"]) for c in lines.calls] == [
        (("rtmp_connection_refused",), EVICTED, 0),
        (("rtmp_connection_refused",), EVICTED, 4),
    ]


def test_settings_refuse_caps_that_cannot_work() -> None:
    base = {"http_addr": "127.0.0.1:0", "grpc_addr": "127.0.0.1:0"}
    IngestSettings(**base).validate()  # type: ignore[arg-type]
    for field, value in (
        ("rtmp_max_connections_per_addr", 100),  # above the total
        ("rtmp_negotiation_timeout_s", 0.0),
        ("rtmp_max_command_bytes", 100),
        ("rtmp_max_partial_bytes", 1024),  # below one media message
        ("rtmp_key_rate_per_s", 0.0),
        ("http_rate_burst", 0),
    ):
        with pytest.raises(SettingsError):
            IngestSettings(**base, **{field: value}).validate()  # type: ignore[arg-type]
