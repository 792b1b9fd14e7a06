"""The RTMP wire below the commands: handshake and the chunk stream (sans I/O).

`ChunkParser.feed(bytes)` turns received bytes into whole `Message`s, following the four chunk
header formats, extended timestamps and the peer's chunk size; `ChunkWriter` splits outgoing
messages into chunks. The handshake is the plain one (S1 carries a zero version, S2 echoes C1),
which ffmpeg, OBS/librtmp and GStreamer accept for `rtmp://` publishing.

What a peer can make the parser hold is bounded by its `ChunkLimits`, checked when a chunk's
header arrives (before its body is waited for): the size of one message (commands and data
apart from audio and video), the chunk streams it knows and those holding a partial message,
the bytes of partial messages together, and before the publish is accepted how many messages
and bytes may come at all, in chunks of 128 bytes at least: so the parsing a stranger can cause
is bounded too (a few thousand chunks). A breach raises `ChunkError` with a `reason`.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field, replace

HANDSHAKE_SIZE = 1536
RTMP_VERSION = 3
DEFAULT_CHUNK_SIZE = 128
MAX_CHUNK_SIZE = 0x7FFFFFFF
MAX_MESSAGE_BYTES = 8 * 1024 * 1024  # above any sane 4K keyframe; refuses memory bombs
MAX_COMMAND_BYTES = 64 * 1024  # connect, publish, onMetaData: a few hundred bytes each
MAX_PARTIAL_STREAMS = 8  # ffmpeg and OBS interleave at most audio, video and a command
MAX_PARTIAL_BYTES = 16 * 1024 * 1024  # two keyframes under way at once
# Every chunk stream a peer opens keeps its last header; encoders use fewer than ten.
MAX_CHUNK_STREAMS = 64
# Before the publish is accepted: ffmpeg sends 6 messages (about 500 bytes), OBS 8.
MESSAGES_BEFORE_PUBLISH = 64
EXTENDED_TIMESTAMP = 0xFFFFFF

# Message types (RTMP spec §5.4, §7.1).
SET_CHUNK_SIZE, ABORT, ACKNOWLEDGEMENT, USER_CONTROL = 1, 2, 3, 4
WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 5, 6
AUDIO, VIDEO = 8, 9
DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0 = 15, 17, 18, 20
AGGREGATE = 22
MEDIA_TYPES = frozenset({AUDIO, VIDEO, AGGREGATE})

# Chunk stream ids the server writes on.
CSID_CONTROL, CSID_COMMAND, CSID_STREAM = 2, 3, 5
STREAM_BEGIN = 0


class ChunkError(ValueError):
    """The peer broke the chunk stream protocol or a limit; the connection must be dropped.

    `reason` names which, as a metric label: `protocol`, `message_size`, `media_before_publish`,
    `chunk_streams`, `partial_streams`, `partial_bytes`, `messages_before_publish`,
    `bytes_before_publish`, `chunk_size`.
    """

    def __init__(self, message: str, reason: str = "protocol") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ChunkLimits:
    """What one connection may make the parser hold (the defaults: a publishing encoder)."""

    max_command_bytes: int = MAX_COMMAND_BYTES  # one message other than audio or video
    max_media_bytes: int = MAX_MESSAGE_BYTES  # one audio or video message; 0: none allowed
    max_partial_streams: int = MAX_PARTIAL_STREAMS
    max_partial_bytes: int = MAX_PARTIAL_BYTES
    max_messages: int = 0  # messages in all; 0: no limit
    max_bytes: int = 0  # bytes fed in all; 0: no limit
    min_chunk_size: int = 1  # the smallest Set Chunk Size taken

    def before_publish(self) -> ChunkLimits:
        """The limits until a publish is accepted: commands only, one at a time, a few."""
        return replace(
            self,
            max_media_bytes=0,
            max_partial_bytes=self.max_command_bytes,
            max_messages=MESSAGES_BEFORE_PUBLISH,
            max_bytes=4 * self.max_command_bytes,
            # Every chunk costs a round of parsing: no 1-byte chunks from a stranger. Encoders
            # only ever raise the chunk size from its default of 128.
            min_chunk_size=DEFAULT_CHUNK_SIZE,
        )


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
    """Reassembles messages from chunks. Bytes may arrive split anywhere.

    `limits` may be changed between feeds (when a publish is accepted)."""

    def __init__(self, limits: ChunkLimits | None = None) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.limits = limits or ChunkLimits()
        self.messages = 0  # whole messages parsed
        self.bytes_fed = 0
        self._buffer = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self._partial_streams = 0  # chunk streams holding part of a message
        self._partial_bytes = 0  # the bytes of those parts together

    @property
    def held_bytes(self) -> int:
        """Bytes held for messages not yet whole (parts and an incomplete chunk)."""
        return self._partial_bytes + len(self._buffer)

    def feed(self, data: bytes) -> list[Message]:
        self.bytes_fed += len(data)
        if self.limits.max_bytes and self.bytes_fed > self.limits.max_bytes:
            raise ChunkError(
                f"over {self.limits.max_bytes} bytes before publishing", "bytes_before_publish"
            )
        self._buffer += data
        messages: list[Message] = []
        while True:
            consumed, message = self._parse_chunk()
            if consumed == 0:
                return messages
            del self._buffer[:consumed]
            if message is not None:
                self.messages += 1
                if self.limits.max_messages and self.messages > self.limits.max_messages:
                    raise ChunkError(
                        f"over {self.limits.max_messages} messages before publishing",
                        "messages_before_publish",
                    )
                messages.append(message)
                if message.type_id == SET_CHUNK_SIZE:
                    self._set_chunk_size(message.payload)
                elif message.type_id == ABORT and len(message.payload) >= 4:
                    (csid,) = struct.unpack(">I", message.payload[:4])
                    self._abort(csid)

    def _abort(self, csid: int) -> None:
        stream = self._streams.get(csid)
        if stream is not None and stream.partial:
            self._partial_streams -= 1
            self._partial_bytes -= len(stream.partial)
            stream.partial.clear()

    def _check_message(self, type_id: int, length: int) -> None:
        """Refuses a message, from its header, that these limits do not allow."""
        limits = self.limits
        if type_id in MEDIA_TYPES:
            if not limits.max_media_bytes:
                raise ChunkError(
                    f"media message (type {type_id}) before publishing", "media_before_publish"
                )
            cap = limits.max_media_bytes
        else:
            cap = limits.max_command_bytes
        if length > cap:
            raise ChunkError(
                f"message of {length} bytes (type {type_id}) is over the limit of {cap}",
                "message_size",
            )

    def _set_chunk_size(self, payload: bytes) -> None:
        if len(payload) < 4:
            raise ChunkError("short Set Chunk Size")
        size = struct.unpack(">I", payload[:4])[0] & MAX_CHUNK_SIZE
        if size < 1:
            raise ChunkError("chunk size 0")
        if size < self.limits.min_chunk_size:
            raise ChunkError(
                f"chunk size {size} is under {self.limits.min_chunk_size}", "chunk_size"
            )
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
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise ChunkError(f"over {MAX_CHUNK_STREAMS} chunk streams", "chunk_streams")
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
        if fmt <= 1 and not new_message:
            raise ChunkError(f"chunk stream {csid} starts a message inside another")
        if new_message:
            self._check_message(type_id, length)
        take = min(self.chunk_size, length - len(stream.partial))
        stays_partial = len(stream.partial) + take < length
        if stays_partial:
            if new_message and self._partial_streams >= self.limits.max_partial_streams:
                raise ChunkError(
                    f"over {self.limits.max_partial_streams} chunk streams with partial messages",
                    "partial_streams",
                )
            if self._partial_bytes + take > self.limits.max_partial_bytes:
                raise ChunkError(
                    f"over {self.limits.max_partial_bytes} bytes of partial messages",
                    "partial_bytes",
                )
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
        if stays_partial:
            stream.partial += buf[ts_end:end]
            self._partial_bytes += take
            if new_message:
                self._partial_streams += 1
            return end, None
        if new_message:
            payload = bytes(buf[ts_end:end])
        else:
            self._partial_streams -= 1
            self._partial_bytes -= len(stream.partial)
            stream.partial += buf[ts_end:end]
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
