"""`baycast up` makes distribution's secrets key once, for its owner's eyes only."""

from __future__ import annotations

import stat
from pathlib import Path

from services.distribution.keyring import read_key_file
from services.up.launcher import Console, Launcher


def test_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    launcher = Launcher(tmp_path / ".baycast", "127.0.0.1", Console())
    path = launcher.secrets_key_file()
    assert path.parent == tmp_path / ".baycast"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = read_key_file(str(path))
    assert len(key) == 32
    path.chmod(0o644)  # left readable by something else: closed again, the key kept
    assert launcher.secrets_key_file() == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and read_key_file(str(path)) == key
