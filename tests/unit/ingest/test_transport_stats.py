"""Transport statistics of RTMP and SRT contributions: TCP_INFO and the jitter estimate."""

from __future__ import annotations

import socket
import struct

import pytest

from services.ingest.jitter import GAIN, InterarrivalJitter
from services.ingest.tcp_info import TCP_INFO_BYTES, parse_tcp_info, tcp_info


def tcp_info_bytes(*, state: int, retransmits: int, rtt: int, rttvar: int, total: int) -> bytes:
    """A Linux `struct tcp_info` as the kernel fills it (232 bytes on 6.x), other fields 0xAA."""
    raw = bytearray(b"\xaa" * 232)
    raw[0], raw[2] = state, retransmits
    struct.pack_into("=I", raw, 68, rtt)
    struct.pack_into("=I", raw, 72, rttvar)
    struct.pack_into("=I", raw, 100, total)
    return bytes(raw)


def test_tcp_info_fields_come_from_their_linux_offsets() -> None:
    raw = tcp_info_bytes(state=1, retransmits=2, rtt=12_345, rttvar=678, total=9)
    info = parse_tcp_info(raw)
    assert (info.state, info.retransmits, info.rtt_us, info.rttvar_us, info.total_retrans) == (
        1,
        2,
        12_345,
        678,
        9,
    )
    assert info.rtt_ms == pytest.approx(12.345)
    assert parse_tcp_info(raw[:TCP_INFO_BYTES]) == info  # an older kernel's shorter struct
    with pytest.raises(ValueError):
        parse_tcp_info(raw[:100])


def test_tcp_info_of_a_real_socket_pair() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            peer.sendall(b"x" * 1000)
            client.recv(1000)
            info = tcp_info(peer)
            assert info is not None and info.state == 1  # TCP_ESTABLISHED
            assert 0 < info.rtt_ms < 50
    assert tcp_info(peer) is None  # closed: no information, no exception


def test_jitter_of_a_steady_stream_is_zero() -> None:
    jitter = InterarrivalJitter()
    for i in range(100):
        jitter.update(i * 0.04, 1000 + i * 0.04)  # arrival shifted by a constant: no jitter
    assert jitter.jitter_ms == pytest.approx(0, abs=1e-9) and jitter.samples == 99


def test_jitter_follows_rfc_3550() -> None:
    jitter = InterarrivalJitter()
    # Pictures every 40 ms; the second arrives 10 ms late, the third on time again.
    jitter.update(0.00, 5.000)
    jitter.update(0.04, 5.050)  # D = 50 - 40 = 10 ms
    assert jitter.jitter_ms == pytest.approx(10 * GAIN)
    jitter.update(0.08, 5.080)  # D = 30 - 40 = -10 ms
    assert jitter.jitter_ms == pytest.approx(10 * GAIN + (10 - 10 * GAIN) * GAIN)
    # A constant alternation of +/- d converges to d.
    for i in range(3, 400):
        jitter.update(i * 0.04, 5.0 + i * 0.04 + (0.006 if i % 2 else 0.0))
    assert jitter.jitter_ms == pytest.approx(6.0, rel=0.01)


def test_jitter_ignores_repeats_reorderings_and_new_timelines() -> None:
    jitter = InterarrivalJitter()
    jitter.update(1.0, 10.0)
    jitter.update(1.0, 10.3)  # the same timestamp again (another packet of one picture)
    jitter.update(0.5, 10.4)  # backwards
    jitter.update(100.0, 10.5)  # a jump to a new timeline
    assert jitter.samples == 0 and jitter.jitter_ms == 0
