"""Output secrets sealed at rest: AES-256-GCM under keys read from files (docs/adr/0020).

An output's stream key and SRT passphrase are stored in `dist_outputs` as

    sealed:v1:<key id>:<base64url(nonce | ciphertext | tag)>

The key id names the key that sealed the value (the first 12 hex digits of a hash of the key, so
no one has to name keys and two files cannot claim one id). The associated data binds a sealed
value to its record, its field and where it may be sent (`<prod>.<id>`, the field's name, the
output's kind and URL): copied into another record, or left in a record whose URL was changed to
another server, it no longer opens, so a bucket writer cannot redirect a key to itself.

Rotation: the current key (`SECRETS_KEY_FILE`) seals every write; older keys
(`SECRETS_OLD_KEY_FILES`) still open what they sealed, and a record sealed with one is sealed
again with the current key when its production is loaded. A value without the prefix was stored
before sealing existed: it opens as it is and is sealed on that load too.

    KeyringError      a key file is missing, unreadable or not a 32-byte key
    SealedValueError  a stored value cannot be opened (unknown key id, damaged, moved)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common.gen.baycast.v1 import distribution_pb2 as dist

PREFIX = "sealed:v1:"
KEY_BYTES = 32
NONCE_BYTES = 12
KEY_ID_DIGITS = 12
SECRET_FIELDS = ("stream_key", "passphrase")


class KeyringError(Exception):
    """A key file cannot be used; the message names the file, never its content."""


class SealedValueError(Exception):
    """A stored secret cannot be opened with the keys this process has."""


def key_id(key: bytes) -> str:
    """The id stored beside what `key` seals."""
    return hashlib.sha256(b"baycast dist_outputs key\n" + key).hexdigest()[:KEY_ID_DIGITS]


def parse_key(text: str, where: str) -> bytes:
    """A key from a key file's text: 32 bytes in base64 (standard or URL-safe), as
    `openssl rand -base64 32` writes them."""
    raw = text.strip()
    try:
        key = base64.b64decode(raw.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where} does not hold a base64 key") from None
    if len(key) != KEY_BYTES:
        raise KeyringError(f"{where} holds {len(key)} bytes, not a {KEY_BYTES}-byte key")
    return key


def read_key_file(path: str) -> bytes:
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not text"
        raise KeyringError(f"cannot read key file {path}: {reason}") from None
    return parse_key(text, f"key file {path}")


def new_key_text() -> str:
    """A fresh key as a key file holds it."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n"


def write_new_key_file(path: Path) -> bool:
    """Create `path` holding a fresh key, readable by its owner only; False if it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(new_key_text())
    return True


def is_sealed(value: str) -> bool:
    return value.startswith(PREFIX)


def sealed_key_id(value: str) -> str:
    """The key id of a sealed value ('' for a value stored in clear)."""
    if not is_sealed(value):
        return ""
    return value[len(PREFIX) :].partition(":")[0]


def _context(record: str, field: str, spec: dist.OutputSpec) -> bytes:
    return f"baycast dist_outputs v1\n{record}\n{field}\n{spec.kind}\n{spec.url}".encode()


class Keyring:
    """The current key (seals) and older ones (open only)."""

    def __init__(self, current: bytes | None, older: Sequence[bytes] = ()) -> None:
        self._current = current
        self._keys = {key_id(k): k for k in (*older, *([current] if current else []))}
        self.current_id = key_id(current) if current else ""

    @classmethod
    def from_files(cls, current: str, older: Sequence[str] = ()) -> Keyring:
        return cls(read_key_file(current) if current else None, [read_key_file(p) for p in older])

    @property
    def can_seal(self) -> bool:
        return self._current is not None

    def seal(self, value: str, record: str, field: str, spec: dist.OutputSpec) -> str:
        if not value:
            return ""
        if self._current is None:
            raise SealedValueError("no secrets key is configured")
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self._current).encrypt(nonce, value.encode(), _context(record, field, spec))
        text = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self.current_id}:{text}"

    def open(self, value: str, record: str, field: str, spec: dist.OutputSpec) -> str:
        if not is_sealed(value):
            return value
        kid, _, text = value[len(PREFIX) :].partition(":")
        key = self._keys.get(kid)
        if key is None:
            raise SealedValueError(
                f"its {field} is sealed with key {kid}, which this distribution does not have"
                " (BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE / SECRETS_OLD_KEY_FILES)"
            )
        try:
            blob = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            opened = AESGCM(key).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], _context(record, field, spec)
            )
            return opened.decode()
        except (binascii.Error, ValueError, InvalidTag, UnicodeDecodeError):
            raise SealedValueError(
                f"its {field} (key {kid}) does not open: damaged, or moved to another record or URL"
            ) from None

    def seal_spec(self, spec: dist.OutputSpec, record: str) -> dist.OutputSpec:
        """A copy of `spec` as it is stored: its secrets sealed with the current key."""
        stored = dist.OutputSpec()
        stored.CopyFrom(spec)
        for field in SECRET_FIELDS:
            setattr(stored, field, self.seal(getattr(spec, field), record, field, spec))
        return stored

    def open_spec(self, stored: dist.OutputSpec, record: str) -> dist.OutputSpec:
        """A copy of a stored spec with its secrets opened; SealedValueError if one cannot be."""
        spec = dist.OutputSpec()
        spec.CopyFrom(stored)
        for field in SECRET_FIELDS:
            setattr(spec, field, self.open(getattr(stored, field), record, field, stored))
        return spec

    def stale(self, stored: dist.OutputSpec) -> bool:
        """Whether a stored spec holds a secret in clear or sealed with another than the
        current key (so it should be sealed again)."""
        values = [getattr(stored, field) for field in SECRET_FIELDS]
        return any(v and sealed_key_id(v) != self.current_id for v in values)

    @staticmethod
    def holds_secret(spec: dist.OutputSpec) -> bool:
        return any(getattr(spec, field) for field in SECRET_FIELDS)
