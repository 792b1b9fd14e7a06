"""Sealing outputs' secrets at rest (keyring.py): what is stored, what opens, rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.settings import SettingsError, load_settings
from services.distribution.keyring import (
    PREFIX,
    Keyring,
    KeyringError,
    SealedValueError,
    key_id,
    new_key_text,
    parse_key,
    read_key_file,
    sealed_key_id,
    write_new_key_file,
)
from services.distribution.settings import DistributionSettings

OLD, NEW = os.urandom(32), os.urandom(32)
RECORD = "qihang.cctv"
SPEC = dist.OutputSpec(
    id="cctv",
    production="qihang",
    kind=dist.OUTPUT_KIND_RTMP,
    url="rtmp://push.example.org/live",
    stream_key="cctv-key-0123456789",
    enabled=True,
)
SRT = dist.OutputSpec(
    id="xinhua",
    production="qihang",
    kind=dist.OUTPUT_KIND_SRT,
    url="srt://push.example.org:9000",
    passphrase="harbour-bridge-2026",
)


def test_a_sealed_spec_holds_no_secret_and_opens_to_the_same_spec() -> None:
    ring = Keyring(NEW)
    for spec in (SPEC, SRT):
        stored = ring.seal_spec(spec, f"qihang.{spec.id}")
        secret = spec.stream_key or spec.passphrase
        assert secret not in str(stored) and secret.encode() not in stored.SerializeToString()
        sealed = stored.stream_key or stored.passphrase
        assert sealed.startswith(PREFIX) and sealed_key_id(sealed) == key_id(NEW)
        assert (stored.url, stored.kind, stored.enabled) == (spec.url, spec.kind, spec.enabled)
        assert ring.open_spec(stored, f"qihang.{spec.id}") == spec
    # Two seals of one value differ (a fresh nonce each time).
    assert ring.seal_spec(SPEC, RECORD).stream_key != ring.seal_spec(SPEC, RECORD).stream_key


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s: setattr(s, "url", "rtmp://attacker.example.net/live"), "does not open"),
        (lambda s: setattr(s, "kind", dist.OUTPUT_KIND_RTMPS), "does not open"),
        (lambda s: setattr(s, "stream_key", s.stream_key[:-4] + "AAAA"), "does not open"),
    ],
)
def test_a_value_moved_redirected_or_damaged_does_not_open(change: object, words: str) -> None:
    ring = Keyring(NEW)
    stored = ring.seal_spec(SPEC, RECORD)
    change(stored)  # type: ignore[operator]
    with pytest.raises(SealedValueError, match=words):
        ring.open_spec(stored, RECORD)
    with pytest.raises(SealedValueError, match="does not open"):  # another record's key
        ring.open_spec(ring.seal_spec(SPEC, RECORD), "qihang.other")


def test_rotation_opens_old_values_seals_new_ones_and_says_what_is_stale() -> None:
    old_stored = Keyring(OLD).seal_spec(SPEC, RECORD)
    rotated = Keyring(NEW, [OLD])
    assert rotated.stale(old_stored)
    opened = rotated.open_spec(old_stored, RECORD)
    assert opened == SPEC
    resealed = rotated.seal_spec(opened, RECORD)
    assert sealed_key_id(resealed.stream_key) == key_id(NEW) and not rotated.stale(resealed)
    # Without the old key, the old value names the key it needs.
    with pytest.raises(SealedValueError, match=key_id(OLD)):
        Keyring(NEW).open_spec(old_stored, RECORD)
    # A value stored in clear (before sealing) opens as it is and is stale.
    assert rotated.open_spec(SPEC, RECORD) == SPEC and rotated.stale(SPEC)
    assert not rotated.stale(dist.OutputSpec(id="web", kind=dist.OUTPUT_KIND_HLS))


def test_without_a_key_nothing_is_sealed_and_sealed_values_do_not_open() -> None:
    ring = Keyring(None)
    assert not ring.can_seal and ring.current_id == ""
    with pytest.raises(SealedValueError, match="no secrets key"):
        ring.seal_spec(SPEC, RECORD)
    assert ring.seal_spec(SRT.__class__(id="web"), "p.web") == dist.OutputSpec(id="web")
    with pytest.raises(SealedValueError, match="does not have"):
        ring.open_spec(Keyring(NEW).seal_spec(SPEC, RECORD), RECORD)


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "state" / "secrets.key"
    assert write_new_key_file(path) and not write_new_key_file(path)  # never overwritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_key_file(str(path))
    assert len(key) == 32 and parse_key(new_key_text(), "x") != key
    assert parse_key("  " + path.read_text().replace("+", "-").replace("/", "_"), "x") == key
    (tmp_path / "short").write_text("c2hvcnQ=\n")
    (tmp_path / "text").write_text("not base64 at all!\n")
    with pytest.raises(KeyringError, match="holds 5 bytes"):
        read_key_file(str(tmp_path / "short"))
    with pytest.raises(KeyringError, match="does not hold a base64 key") as caught:
        read_key_file(str(tmp_path / "text"))
    assert "not base64" not in str(caught.value)  # the content is never echoed
    with pytest.raises(KeyringError, match="cannot read"):
        read_key_file(str(tmp_path / "missing"))


def test_settings_read_the_key_files_at_start_up(tmp_path: Path) -> None:
    good = tmp_path / "key"
    write_new_key_file(good)
    (tmp_path / "bad").write_text("x\n")
    env = {"BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE": str(good)}
    ring = load_settings(DistributionSettings, "distribution", env).keyring()
    assert ring.current_id == key_id(read_key_file(str(good)))
    for wrong in (
        {"BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE": str(tmp_path / "bad")},
        {**env, "BAYCAST_DISTRIBUTION_SECRETS_OLD_KEY_FILES": f"{good},{tmp_path / 'gone'}"},
    ):
        with pytest.raises(SettingsError, match="SECRETS_"):
            load_settings(DistributionSettings, "distribution", wrong).keyring()
    with pytest.raises(SettingsError, match="SECRETS_OLD_KEY_FILES needs"):
        load_settings(
            DistributionSettings, "distribution", {"BAYCAST_SECRETS_OLD_KEY_FILES": str(good)}
        )
    assert not load_settings(DistributionSettings, "distribution", {}).keyring().can_seal
