"""SRT passphrases and the listener's command line, without processes."""

from __future__ import annotations

from services.common.credentials import srt_passphrase, with_new_token
from services.common.gen.baycast.v1 import ingest_pb2
from services.ingest.srt import listener_args


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


def test_the_passphrase_is_an_option_never_in_the_url() -> None:
    args = listener_args("127.0.0.1", 9003, "p" * 32)
    url = next(a for a in args if a.startswith("srt://"))
    assert url == "srt://127.0.0.1:9003"
    assert args[args.index("-passphrase") + 1] == "p" * 32
    assert args[args.index("-enforced_encryption") + 1] == "1"
    assert args[args.index("-mode") + 1] == "listener"
    assert args[-3:] == ["-flush_packets", "1", "pipe:1"]
