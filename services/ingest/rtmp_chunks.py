"""The RTMP wire below the commands: handshake and the chunk stream (sans I/O).

`ChunkParser.feed(bytes)` turns received bytes into whole `Message`s, following the four chunk
header formats, extended timestamps and the peer's chunk size; `ChunkWriter` splits outgoing
messages into chunks. The handshake is the plain one (S1 carries a zero version, S2 echoes C1),
which ffmpeg, OBS/librtmp and GStreamer accept for `rtmp://` publishing.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # above any sane 4K keyframe; refuses memory bombs
EXTENDED_TIMESTAMP = 0xFFFFFF

# Message types (RTMP spec §5.4, §7.1).
SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL = 1, 2, 3, 4
WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 15, 17, 18, 20

# Chunk stream ids the server writes on.
CSID_CONTROL, CSID_COMMAND, CSID_STREAM = 2, 3, 5
STREAM_BEGIN = 0


class ChunkError(ValueError):
    """The peer broke the chunk stream protocol; the connection must be dropped."""


@dataclass
class Message:
    type_id: int
    stream_id: int
    timestamp: int  # milliseconds, absolute, wraps at 2**32
    payload: bytes


@dataclass
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    partial: bytearray = field(default_factory=bytearray)


def handshake_reply(c0c1: bytes) -> bytes:
    """S0 + S1 + S2 for a client's C0 + C1 (raises ChunkError on a wrong version)."""
    if len(c0c1) != 1 + HANDSHAKE_SIZE:
        raise ChunkError("short handshake")
    if c0c1[0] != RTMP_VERSION:
        raise ChunkError(f"RTMP version {c0c1[0]} is not supported (only 3, plain rtmp://)")
    s1 = b"\x00" * 8 + os.urandom(HANDSHAKE_SIZE - 8)
    return bytes([RTMP_VERSION]) + s1 + c0c1[1:]


class ChunkParser:
    """Reassembles messages from chunks. Bytes may arrive split anywhere."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buffer = bytearray()
        self._streams: dict[int, _ChunkStream] = {}

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while True:
            consumed, message = self._parse_chunk()
            if consumed == 0:
                return messages
            del self._buffer[:consumed]
            if message is not None:
                messages.append(message)
                if message.type_id == SET_CHUNK_SIZE:
                    self._set_chunk_size(message.payload)
                elif message.type_id == ABORT and len(message.payload) >= 4:
                    (csid,) = struct.unpack(">I", message.payload[:4])
                    if csid in self._streams:
                        self._streams[csid].partial.clear()

    def _set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise ChunkError("short Set Chunk Size")
        size = struct.unpack(">I", payload[:4])[0] & MAX_CHUNK_SIZE
        if size < 1:
            raise ChunkError("chunk size 0")
        self.chunk_size = size

    def _parse_chunk(self) -> tuple[int, Message | None]:
        """(bytes consumed, message completed by this chunk); (0, None) if more bytes are needed."""
        buf = self._buffer
        if not buf:
            return 0, None
        fmt, csid = buf[0] >> 6, buf[0] & 0x3F
        pos = 1
        if csid == 0:
            if len(buf) < 2:
                return 0, None
            csid, pos = 64 + buf[1], 2
        elif csid == 1:
            if len(buf) < 3:
                return 0, None
            csid, pos = 64 + buf[1] + 256 * buf[2], 3
        header = (11, 7, 3, 0)[fmt]
        if len(buf) < pos + header:
            return 0, None
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise ChunkError(f"chunk stream {csid} starts without a full header")
            stream = self._streams[csid] = _ChunkStream()
        raw_ts = 0
        if fmt <= 2:
            raw_ts = int.from_bytes(buf[pos : pos + 3], "big")
        extended = raw_ts == EXTENDED_TIMESTAMP if fmt <= 2 else stream.extended
        ts_end = pos + header + (4 if extended else 0)
        if len(buf) < ts_end:
            return 0, None
        if extended:
            raw_ts = int.from_bytes(buf[pos + header : ts_end], "big")
        new_message = not stream.partial
        length, type_id, stream_id = stream.length, stream.type_id, stream.stream_id
        if fmt <= 1:
            length = int.from_bytes(buf[pos + 3 : pos + 6], "big")
            type_id = buf[pos + 6]
        if fmt == 0:
            stream_id = int.from_bytes(buf[pos + 7 : pos + 11], "little")
        if length > MAX_MESSAGE_BYTES:
            raise ChunkError(f"message of {length} bytes is over the limit")
        if fmt <= 1 and not new_message:
            raise ChunkError(f"chunk stream {csid} starts a message inside another")
        take = min(self.chunk_size, length - len(stream.partial))
        end = ts_end + take
        if len(buf) < end:
            return 0, None
        # The whole chunk is here: commit its header to the chunk stream's state.
        if fmt <= 2:
            stream.extended = extended
        if fmt == 0:
            stream.timestamp, stream.delta = raw_ts, 0
        elif fmt in (1, 2):
            stream.delta = raw_ts
            stream.timestamp = (stream.timestamp + raw_ts) & 0xFFFFFFFF
        elif new_message:
            stream.timestamp = (stream.timestamp + stream.delta) & 0xFFFFFFFF
        stream.length, stream.type_id, stream.stream_id = length, type_id, stream_id
        stream.partial += buf[ts_end:end]
        if len(stream.partial) < length:
            return end, None
        payload = bytes(stream.partial)
        stream.partial.clear()
        return end, Message(type_id, stream_id, stream.timestamp, payload)


class ChunkWriter:
    """Splits messages into chunks: a full header first, then type-3 continuation headers."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def encode(self, csid: int, message: Message) -> bytes:
        ts = message.timestamp & 0xFFFFFFFF
        extended = ts >= EXTENDED_TIMESTAMP
        header = (
            bytes([csid & 0x3F])
            + min(ts, EXTENDED_TIMESTAMP).to_bytes(3, "big")
            + len(message.payload).to_bytes(3, "big")
            + bytes([message.type_id])
            + struct.pack("<I", message.stream_id)
        )
        ext = struct.pack(">I", ts) if extended else b""
        out = bytearray(header + ext)
        payload = message.payload
        for offset in range(0, max(len(payload), 1), self.chunk_size):
            if offset:
                out += bytes([0xC0 | (csid & 0x3F)]) + ext
            out += payload[offset : offset + self.chunk_size]
        return bytes(out)


def control(type_id: int, value: int, extra: bytes = b"") -> Message:
    """A protocol control message (chunk size, window size, acknowledgement...)."""
    return Message(type_id, 0, 0, struct.pack(">I", value) + extra)


def user_control(event: int, value: int) -> Message:
    return Message(USER_CONTROL, 0, 0, struct.pack(">HI", event, value))
