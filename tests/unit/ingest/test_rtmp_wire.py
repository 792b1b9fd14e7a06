"""The RTMP wire without sockets: AMF0, handshake, chunk reassembly, FLV tag checks, key lookup."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.credentials import with_new_token
from services.common.gen.baycast.v1 import ingest_pb2
from services.ingest import rtmp_amf
from services.ingest.rtmp import find_station
from services.ingest.rtmp_chunks import (
    AUDIO,
    COMMAND_AMF0,
    SET_CHUNK_SIZE,
    VIDEO,
    ChunkError,
    ChunkParser,
    ChunkWriter,
    Message,
    control,
    handshake_reply,
)
from services.ingest.rtmp_flv import FlvDecoder, UnsupportedMedia

amf_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.lists(amf_values, max_size=5))
def test_amf0_round_trip(values: list[Any]) -> None:
    assert rtmp_amf.decode(rtmp_amf.encode(*values)) == values


def test_amf0_decodes_what_ffmpeg_sends() -> None:
    # `publish` as ffmpeg writes it: name, transaction id, null, stream key, "live".
    data = (
        b"\x02\x00\x07publish\x00@\x14\x00\x00\x00\x00\x00\x00\x05\x02\x00\x03key\x02\x00\x04live"
    )
    assert rtmp_amf.decode(data) == ["publish", 5.0, None, "key", "live"]
    ecma = b"\x08\x00\x00\x00\x01\x00\x05width\x00@\x84\x00\x00\x00\x00\x00\x00\x00\x00\x09"
    assert rtmp_amf.decode(ecma) == [{"width": 640.0}]


@pytest.mark.parametrize("data", [b"\x02\x00\x09abc", b"\x00\x01", b"\x0d", b"\x03\x00\x01a"])
def test_amf0_refuses_truncated_or_unknown(data: bytes) -> None:
    with pytest.raises(rtmp_amf.AmfError):
        rtmp_amf.decode(data)


def test_handshake_echoes_c1_and_refuses_other_versions() -> None:
    c1 = bytes(range(256)) * 6
    reply = handshake_reply(b"\x03" + c1)
    assert len(reply) == 1 + 2 * 1536 and reply[0] == 3
    assert reply[1:9] == b"\x00" * 8  # plain handshake: zero time and version
    assert reply[1537:] == c1
    with pytest.raises(ChunkError):
        handshake_reply(b"\x06" + c1)


@given(
    st.lists(st.binary(min_size=0, max_size=700), min_size=1, max_size=6),
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=97),
)
def test_chunks_reassemble_whatever_the_split(
    payloads: list[bytes], chunk_size: int, piece: int
) -> None:
    writer = ChunkWriter()
    wire = writer.encode(2, control(SET_CHUNK_SIZE, chunk_size))
    writer.chunk_size = chunk_size
    sent = [Message(VIDEO if i % 2 else AUDIO, 1, 40 * i, p) for i, p in enumerate(payloads)]
    for i, message in enumerate(sent):
        wire += writer.encode(4 + i % 2, message)
    parser = ChunkParser()
    got: list[Message] = []
    for offset in range(0, len(wire), piece):
        got += parser.feed(wire[offset : offset + piece])
    assert got[0].type_id == SET_CHUNK_SIZE and parser.chunk_size == chunk_size
    assert got[1:] == sent


def test_compressed_headers_and_extended_timestamps() -> None:
    # fmt 0 with an extended timestamp, then fmt 1 / fmt 2 deltas, then fmt 3 repeating the delta.
    ts = 0x01000000
    wire = (
        bytes([0x06]) + b"\xff\xff\xff" + (3).to_bytes(3, "big") + bytes([VIDEO])
        + struct.pack("<I", 1) + struct.pack(">I", ts) + b"abc"
        + bytes([0x46]) + (40).to_bytes(3, "big") + (2).to_bytes(3, "big") + bytes([VIDEO]) + b"de"
        + bytes([0x86]) + (20).to_bytes(3, "big") + b"fg"
        + bytes([0xC6]) + b"hi"
    )  # fmt: skip
    got = ChunkParser().feed(wire)
    assert [(m.timestamp, m.payload) for m in got] == [
        (ts, b"abc"),
        (ts + 40, b"de"),
        (ts + 60, b"fg"),
        (ts + 80, b"hi"),
    ]
    assert ChunkWriter().encode(3, Message(COMMAND_AMF0, 0, ts, b"x"))[1:4] == b"\xff\xff\xff"


def test_protocol_violations_are_errors() -> None:
    with pytest.raises(ChunkError):
        ChunkParser().feed(bytes([0x46]) + b"\x00" * 7)  # a compressed header first
    with pytest.raises(ChunkError):  # a message over the size limit
        ChunkParser().feed(bytes([0x06]) + b"\x00\x00\x00" + b"\xff\xff\xff\x09" + b"\x00" * 4)


def test_flv_decoder_refuses_codecs_it_cannot_decode() -> None:
    decoder = FlvDecoder()
    with pytest.raises(UnsupportedMedia, match=r"H\.264"):
        decoder.video(0, bytes([0x12, 0x01, 0, 0, 0]) + b"x")  # Sorenson H.263
    with pytest.raises(UnsupportedMedia, match="Enhanced RTMP"):
        decoder.video(0, bytes([0x90]) + b"hvc1" + b"x")
    with pytest.raises(UnsupportedMedia, match="AAC"):
        decoder.audio(0, bytes([0x2F, 0x01]) + b"x")  # MP3
    # Coded frames before any sequence header are skipped, not errors.
    assert decoder.video(0, bytes([0x17, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x01\x65") == []
    assert decoder.audio(0, bytes([0xAF, 0x01]) + b"\x21") == []
    assert decoder.decode_errors == 0


class FakeBucket:
    def __init__(self, stations: list[ingest_pb2.Station]) -> None:
        self.stations = {s.id: s for s in stations}

    async def items(self) -> dict[str, ingest_pb2.Station]:
        return dict(self.stations)


class FakeRegistry:
    def __init__(self, bucket: FakeBucket) -> None:
        self.bucket = bucket

    async def authenticate(self, station_id: str, token: str) -> ingest_pb2.Station:
        from services.common import errors
        from services.common.credentials import token_matches

        station = self.bucket.stations.get(station_id)
        if station is None or not token_matches(station, token):
            raise errors.Unauthenticated("no")
        return station


def test_find_station_by_key_under_live_or_by_station() -> None:
    gz, gz_token = with_new_token(ingest_pb2.Station(id="gz", name="广州台"))
    sz, sz_token = with_new_token(ingest_pb2.Station(id="sz", name="深圳台"))
    revoked, old_token = with_new_token(ingest_pb2.Station(id="mo", revoked=True))
    registry: Any = FakeRegistry(FakeBucket([gz, sz, revoked]))

    def find(app: str, key: str) -> str | None:
        station = asyncio.run(find_station(registry, app, key))
        return station.id if station else None

    assert find("live", sz_token) == "sz"
    assert find("live", gz_token + "?obs=1") == "gz"
    assert find("gz", gz_token) == "gz"
    assert find("sz", gz_token) is None
    assert find("live", old_token) is None
    assert find("live", "") is None
