"""TSL UMD v5: the packets hardware tally lights and under-monitor displays read.

A packet (all numbers little-endian):

    PBC u16      bytes that follow the PBC itself
    VER u8       0
    FLAGS u8     bit 0: text is UTF-16LE (else ASCII); bit 1: screen control (not used here)
    SCREEN u16   0xFFFF: every screen
    per display:
      INDEX u16    0xFFFF: every display
      CONTROL u16  bits 0-1 right tally, 2-3 text tally, 4-5 left tally, 6-7 brightness (0..3);
                   bit 15: control data instead of text (not used here)
      LENGTH u16   bytes of TEXT
      TEXT

Tally values: 0 off, 1 red, 2 green, 3 amber. Over UDP a packet is one datagram of at most 2048
bytes; over TCP each packet is framed by DLE (0xFE) STX (0x02), and a 0xFE inside the packet is
sent twice (the PBC still counts the unstuffed bytes).

What baycast lights (`station_display`): a station on program gets its left tally and its text
tally red; on preview, its right tally and its text tally green (the text tally shows program
when both); off, everything 0. Brightness is always full (3), and the text is the station's name
in UTF-16LE, so 广州台 reads right on the display.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

VERSION = 0
FLAG_UTF16LE = 0x01
FLAG_SCREEN_CONTROL = 0x02
CONTROL_DATA_BIT = 0x8000
BROADCAST = 0xFFFF
MAX_PACKET_BYTES = 2048
FULL_BRIGHTNESS = 3
DLE = 0xFE
STX = 0x02
FRAME_START = bytes((DLE, STX))
_HEADER = struct.Struct("<HBBH")  # PBC, VER, FLAGS, SCREEN
_DISPLAY = struct.Struct("<HHH")  # INDEX, CONTROL, LENGTH


class TslError(ValueError):
    """A packet that is not TSL UMD v5 as this module speaks it."""


class Tally(IntEnum):
    OFF = 0
    RED = 1
    GREEN = 2
    AMBER = 3


@dataclass(frozen=True)
class Display:
    """One display's message: its address, three tally lamps, brightness and text."""

    index: int
    right: Tally = Tally.OFF
    text_tally: Tally = Tally.OFF
    left: Tally = Tally.OFF
    brightness: int = FULL_BRIGHTNESS
    text: str = ""

    @property
    def control(self) -> int:
        return (
            (self.right & 3)
            | (self.text_tally & 3) << 2
            | (self.left & 3) << 4
            | (self.brightness & 3) << 6
        )


@dataclass(frozen=True)
class Packet:
    """A TSL UMD v5 display message packet for one screen."""

    screen: int
    displays: tuple[Display, ...]
    utf16: bool = True


def station_display(index: int, name: str, *, program: bool, preview: bool) -> Display:
    """What a station's tally device shows: program red on the left, preview green on the right,
    the text tally red on program, else green on preview."""
    if program:
        text_tally = Tally.RED
    elif preview:
        text_tally = Tally.GREEN
    else:
        text_tally = Tally.OFF
    return Display(
        index=index,
        right=Tally.GREEN if preview else Tally.OFF,
        text_tally=text_tally,
        left=Tally.RED if program else Tally.OFF,
        brightness=FULL_BRIGHTNESS,
        text=name,
    )


def _encode_text(text: str, utf16: bool) -> bytes:
    if utf16:
        return text.encode("utf-16-le")
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise TslError("text outside ASCII needs the UTF-16LE flag") from None


def build(packet: Packet) -> bytes:
    """The packet's bytes; TslError when a field does not fit or it is over 2048 bytes."""
    if not 0 <= packet.screen <= 0xFFFF:
        raise TslError(f"screen {packet.screen} is not a u16")
    body = bytearray()
    for display in packet.displays:
        if not 0 <= display.index <= 0xFFFF:
            raise TslError(f"display index {display.index} is not a u16")
        if not 0 <= display.brightness <= 3:
            raise TslError(f"brightness {display.brightness} is not 0..3")
        text = _encode_text(display.text, packet.utf16)
        body += _DISPLAY.pack(display.index, display.control, len(text))
        body += text
    size = _HEADER.size + len(body)
    if size > MAX_PACKET_BYTES:
        raise TslError(f"the packet is {size} bytes, over {MAX_PACKET_BYTES}")
    flags = FLAG_UTF16LE if packet.utf16 else 0
    return _HEADER.pack(size - 2, VERSION, flags, packet.screen) + bytes(body)


def parse(data: bytes) -> Packet:
    """A packet from its bytes; TslError for anything else (and never another exception)."""
    if len(data) < _HEADER.size:
        raise TslError(f"{len(data)} bytes are too few for a header")
    if len(data) > MAX_PACKET_BYTES:
        raise TslError(f"{len(data)} bytes are over {MAX_PACKET_BYTES}")
    pbc, version, flags, screen = _HEADER.unpack_from(data)
    if pbc != len(data) - 2:
        raise TslError(f"PBC says {pbc} bytes follow, {len(data) - 2} do")
    if version != VERSION:
        raise TslError(f"version {version}, not {VERSION}")
    if flags & FLAG_SCREEN_CONTROL:
        raise TslError("screen control packets are not supported")
    if flags & ~(FLAG_UTF16LE | FLAG_SCREEN_CONTROL):
        raise TslError(f"unknown flags {flags:#04x}")
    utf16 = bool(flags & FLAG_UTF16LE)
    displays = []
    offset = _HEADER.size
    while offset < len(data):
        if len(data) - offset < _DISPLAY.size:
            raise TslError(f"a display message is cut short at byte {offset}")
        index, control, length = _DISPLAY.unpack_from(data, offset)
        offset += _DISPLAY.size
        if control & CONTROL_DATA_BIT:
            raise TslError("display control data is not supported")
        if control & 0x7F00:
            raise TslError(f"reserved control bits set: {control:#06x}")
        if length > len(data) - offset:
            raise TslError(f"text of {length} bytes runs past the packet")
        raw = data[offset : offset + length]
        offset += length
        try:
            text = raw.decode("utf-16-le") if utf16 else raw.decode("ascii")
        except UnicodeDecodeError:
            raise TslError("the text does not decode") from None
        displays.append(
            Display(
                index=index,
                right=Tally(control & 3),
                text_tally=Tally(control >> 2 & 3),
                left=Tally(control >> 4 & 3),
                brightness=control >> 6 & 3,
                text=text,
            )
        )
    return Packet(screen=screen, displays=tuple(displays), utf16=utf16)


def frame(packet: bytes) -> bytes:
    """The packet as sent over TCP: DLE STX, then the packet with each DLE doubled."""
    return FRAME_START + packet.replace(bytes((DLE,)), bytes((DLE, DLE)))


class FrameReader:
    """Packets out of a TCP byte stream framed by `frame`.

    A packet ends where its PBC says, so it is yielded as soon as its last byte arrives (not
    when the next frame begins). Bytes outside a frame, and a frame broken by a DLE followed by
    neither DLE nor STX, are skipped until the next DLE STX, as a receiver joining mid-stream
    would.
    """

    def __init__(self) -> None:
        self._packet = bytearray()
        self._in_frame = False
        self._after_dle = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Add received bytes; yield each packet they complete (unstuffed, as `build` made it)."""
        for byte in data:
            if self._after_dle:
                self._after_dle = False
                if byte == STX:
                    self._packet.clear()
                    self._in_frame = True
                    continue
                if byte != DLE:
                    self._in_frame = False
                    continue
            elif byte == DLE:
                self._after_dle = True
                continue
            if not self._in_frame:
                continue
            self._packet.append(byte)
            if len(self._packet) >= 2:
                size = int.from_bytes(self._packet[:2], "little") + 2
                if size > MAX_PACKET_BYTES:
                    self._in_frame = False
                elif len(self._packet) == size:
                    self._in_frame = False
                    yield bytes(self._packet)
