"""SRT passphrases and the libsrt binding, without a network."""

from __future__ import annotations

import ctypes

import pytest

from services.common.credentials import srt_passphrase, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2
from services.ingest.libsrt import SrtError, SrtSocket, SrtStats, sockaddr


def test_passphrase_follows_the_token_and_needs_the_secret() -> None:
    station, _ = with_new_token(ingest_pb2.Station(id="gz"))
    first = srt_passphrase("secret", station)
    assert len(first) == 32 and first == srt_passphrase("secret", station)
    assert srt_passphrase("other secret", station) != first
    rotated, _ = with_new_token(station)
    assert srt_passphrase("secret", rotated) != first
    other = ingest_pb2.Station(id="sz", token_salt=station.token_salt)
    assert srt_passphrase("secret", other) != first
    station.revoked = True
    assert srt_passphrase("secret", station) == ""


def test_the_statistics_layout_is_srt_1_5s() -> None:
    # sizeof and offsetof of struct CBytePerfMon, compiled from Debian's srt.h 1.5.1 (x86-64).
    assert ctypes.sizeof(SrtStats) == 496
    assert SrtStats.pktRecvTotal.offset == 16
    assert SrtStats.pktRcvLossTotal.offset == 28
    assert SrtStats.pktRcvDropTotal.offset == 68
    assert SrtStats.pktRcvRetrans.offset == 164
    assert SrtStats.msRTT.offset == 328
    assert SrtStats.msRcvBuf.offset == 388
    assert SrtStats.byteRecvUnique.offset == 488


def test_listen_addresses_and_passphrases() -> None:
    v4 = sockaddr("127.0.0.1", 9003)
    assert (
        len(v4) == 16 and v4[2:4] == (9003).to_bytes(2, "big") and v4[4:8] == bytes([127, 0, 0, 1])
    )
    v6 = sockaddr("::1", 9003)
    assert len(v6) == 28 and v6[2:4] == (9003).to_bytes(2, "big") and v6[8:24][-1] == 1
    with pytest.raises(SrtError, match="10 to 79"):
        SrtSocket.listen("127.0.0.1", 9003, passphrase="short", latency_ms=120)
