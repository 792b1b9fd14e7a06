"""TSL UMD v5 packets byte for byte, the TCP framing, and what a station's lamps show."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.common.gen.baycast.v1 import mixer_pb2
from services.common.tally_url import TallyTarget
from services.distribution import tsl_umd
from services.distribution.tally_out import Lights, merge, packet_for
from services.distribution.tsl_umd import Display, FrameReader, Packet, Tally, TslError

# 广 U+5E7F, 州 U+5DDE, 台 U+53F0; 深 U+6DF1, 圳 U+5733.
GUANGZHOU_UTF16 = bytes.fromhex("7f5e de5d f053")
SHENZHEN_UTF16 = bytes.fromhex("f16d 3357 f053")


def test_a_station_on_program_is_red_on_the_left_and_on_the_text() -> None:
    display = tsl_umd.station_display(1, "广州台", program=True, preview=False)
    data = tsl_umd.build(Packet(screen=0, displays=(display,)))
    # control: brightness 3 << 6 | left red 1 << 4 | text red 1 << 2 | right off = 0xD4
    assert data == (
        bytes.fromhex("1000")  # PBC: 16 bytes follow
        + bytes.fromhex("00")  # VER
        + bytes.fromhex("01")  # FLAGS: UTF-16LE text
        + bytes.fromhex("0000")  # SCREEN 0
        + bytes.fromhex("0100")  # INDEX 1
        + bytes.fromhex("d400")  # CONTROL
        + bytes.fromhex("0600")  # LENGTH: three characters, six bytes
        + GUANGZHOU_UTF16
    )


def test_a_station_on_preview_is_green_on_the_right_and_on_the_text() -> None:
    display = tsl_umd.station_display(2, "深圳台", program=False, preview=True)
    data = tsl_umd.build(Packet(screen=0xFFFF, displays=(display,)))
    # control: 3 << 6 | text green 2 << 2 | right green 2 = 0xCA
    assert data == bytes.fromhex("1000 00 01 ffff 0200 ca00 0600") + SHENZHEN_UTF16


def test_program_wins_the_text_tally_and_off_is_dark_at_full_brightness() -> None:
    both = tsl_umd.station_display(1, "x", program=True, preview=True)
    assert (both.left, both.text_tally, both.right) == (Tally.RED, Tally.RED, Tally.GREEN)
    assert both.control == 0xC0 | 0x10 | 0x04 | 0x02
    off = tsl_umd.station_display(1, "x", program=False, preview=False)
    assert (off.left, off.text_tally, off.right, off.brightness) == (0, 0, 0, 3)
    assert off.control == 0xC0


def test_pbc_counts_every_byte_after_itself_for_several_displays() -> None:
    packet = Packet(
        screen=7,
        displays=(
            Display(index=1, left=Tally.RED, text="CAM 1"),
            Display(index=2, right=Tally.AMBER, brightness=1, text=""),
        ),
    )
    data = tsl_umd.build(packet)
    assert int.from_bytes(data[:2], "little") == len(data) - 2 == 4 + (6 + 10) + 6
    assert data[6:12] == bytes.fromhex("0100 d000 0a00") and data[12:22] == "CAM 1".encode(
        "utf-16-le"
    )
    assert data[22:28] == bytes.fromhex("0200 4300 0000")  # amber right 3 | brightness 1 << 6
    assert tsl_umd.parse(data) == packet


def test_packets_over_2048_bytes_and_out_of_range_fields_are_refused() -> None:
    with pytest.raises(TslError, match="2048"):
        tsl_umd.build(Packet(screen=0, displays=(Display(index=1, text="台" * 1100),)))
    with pytest.raises(TslError, match="u16"):
        tsl_umd.build(Packet(screen=0, displays=(Display(index=0x10000),)))
    with pytest.raises(TslError, match="ASCII"):
        tsl_umd.build(Packet(screen=0, displays=(Display(index=1, text="台"),), utf16=False))


def test_framing_doubles_every_dle_inside_the_packet() -> None:
    packet = tsl_umd.build(Packet(screen=0, displays=(Display(index=0xFE, text="\ufefe"),)))
    assert packet == bytes.fromhex("0c00 00 01 0000 fe00 c000 0200 fefe")
    framed = tsl_umd.frame(packet)
    assert framed == bytes.fromhex("fe02 0c00 00 01 0000 fefe00 c000 0200 fefefefe")


def test_the_frame_reader_finds_packets_split_anywhere_and_after_noise() -> None:
    packets = [
        tsl_umd.build(Packet(screen=0, displays=(Display(index=0xFE, text="\ufefe台"),))),
        tsl_umd.build(Packet(screen=3, displays=(Display(index=1, left=Tally.RED, text="gz"),))),
    ]
    stream = b"\x00\xfe\x17noise" + b"".join(tsl_umd.frame(p) for p in packets)
    reader = FrameReader()
    got = [p for byte in stream for p in reader.feed(bytes((byte,)))]
    assert got == packets
    # Whole, the last packet comes out without waiting for the next frame's start.
    assert list(FrameReader().feed(stream)) == packets


def test_parse_refuses_what_is_not_a_v5_display_packet() -> None:
    good = tsl_umd.build(Packet(screen=0, displays=(Display(index=1, text="gz"),)))
    with pytest.raises(TslError, match="PBC"):
        tsl_umd.parse(good + b"\x00")
    with pytest.raises(TslError, match="version"):
        tsl_umd.parse(good[:2] + b"\x01" + good[3:])
    with pytest.raises(TslError, match="control data"):
        tsl_umd.parse(good[:8] + b"\x00\x80" + good[10:])
    with pytest.raises(TslError, match="runs past"):
        tsl_umd.parse(good[:10] + b"\x09\x00" + good[12:])


tallies = st.sampled_from(list(Tally))
displays = st.builds(
    Display,
    index=st.integers(0, 0xFFFF),
    right=tallies,
    text_tally=tallies,
    left=tallies,
    brightness=st.integers(0, 3),
    text=st.text(max_size=40),
)
packets = st.builds(
    Packet, screen=st.integers(0, 0xFFFF), displays=st.lists(displays, max_size=6).map(tuple)
)


@given(packets)
def test_parse_undoes_build(packet: Packet) -> None:
    assert tsl_umd.parse(tsl_umd.build(packet)) == packet


@given(st.lists(packets, min_size=1, max_size=4), st.integers(1, 7))
def test_the_frame_reader_undoes_frame_in_any_chunking(
    packet_list: list[Packet], step: int
) -> None:
    built = [tsl_umd.build(p) for p in packet_list]
    stream = b"".join(tsl_umd.frame(b) for b in built)
    reader = FrameReader()
    got = [p for i in range(0, len(stream), step) for p in reader.feed(stream[i : i + step])]
    assert [tsl_umd.parse(p) for p in got] == packet_list


@given(st.binary(max_size=300))
def test_parse_raises_only_tsl_errors(data: bytes) -> None:
    with contextlib.suppress(TslError):
        tsl_umd.parse(data)


def tally(prod: str, **entries: tuple[bool, bool]) -> mixer_pb2.Tally:
    return mixer_pb2.Tally(
        production=prod,
        sources=[
            mixer_pb2.TallyEntry(source=s, program=pgm, preview=pvw)
            for s, (pgm, pvw) in entries.items()
        ],
    )


def test_a_station_in_several_productions_is_lit_by_all_of_them() -> None:
    a = tally("a", gz=(False, True), sz=(True, False), fs=(False, False))
    b = tally("b", gz=(True, False), sz=(False, False))
    c = tally("c", fs=(False, True))
    assert merge([a, b, c], "gz") == Lights(program=True, preview=True)
    assert merge([a, b, c], "sz") == Lights(program=True, preview=False)
    assert merge([a, b, c], "fs") == Lights(program=False, preview=True)
    assert merge([a, b, c], "zh") == Lights()
    target = TallyTarget("udp", "127.0.0.1", 9, index=4, screen=2)
    fs = tsl_umd.parse(packet_for(target, "佛山台", merge([a, b, c], "fs")))
    assert fs.screen == 2
    assert fs.displays == (
        Display(index=4, right=Tally.GREEN, text_tally=Tally.GREEN, text="佛山台"),
    )
    dark = tsl_umd.parse(packet_for(target, "中山台", merge([a, b, c], "zh")))
    assert dark.displays[0].control == 0xC0
