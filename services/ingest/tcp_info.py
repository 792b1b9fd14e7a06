"""The kernel's view of a TCP connection (Linux `getsockopt(IPPROTO_TCP, TCP_INFO)`).

`struct tcp_info` (include/uapi/linux/tcp.h) starts with eight one-byte fields, then 32-bit
counters; the ones read here and their byte offsets, stable since Linux 2.6 (later kernels only
append fields):

    offset  field               unit
      0     tcpi_state          TCP_ESTABLISHED = 1, ...
      2     tcpi_retransmits    unrecovered retransmission timeouts now
     68     tcpi_rtt            smoothed round-trip time, microseconds
     72     tcpi_rttvar         its mean deviation, microseconds
    100     tcpi_total_retrans  segments this end retransmitted, since the connection began

A receiver's RTT comes from the acknowledgements of what it sends (for RTMP ingest: the
handshake, command replies, window acknowledgements), and from the SYN/ACK at first, so it is
known from the start. Its retransmissions are of what *it* sent; the publisher's own show only
on the publisher's side (a receiver sees them as late data: jitter).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

TCP_INFO_BYTES = 104  # through tcpi_total_retrans
_LAYOUT = struct.Struct("=B x B x 64x I I 24x I")  # state, retransmits, rtt, rttvar, total_retrans
assert _LAYOUT.size == TCP_INFO_BYTES


@dataclass(frozen=True)
class TcpInfo:
    state: int
    retransmits: int
    rtt_us: int
    rttvar_us: int
    total_retrans: int

    @property
    def rtt_ms(self) -> float:
        return self.rtt_us / 1000


def parse_tcp_info(raw: bytes) -> TcpInfo:
    """The fields above from the bytes `getsockopt` returned (ValueError if too short)."""
    if len(raw) < TCP_INFO_BYTES:
        raise ValueError(f"tcp_info of {len(raw)} bytes, expected at least {TCP_INFO_BYTES}")
    state, retransmits, rtt, rttvar, total = _LAYOUT.unpack_from(raw)
    return TcpInfo(state, retransmits, rtt, rttvar, total)


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """The connection's TCP_INFO, None where the platform has none or the socket is closed."""
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        return parse_tcp_info(sock.getsockopt(socket.IPPROTO_TCP, option, TCP_INFO_BYTES))
    except (OSError, ValueError):
        return None
