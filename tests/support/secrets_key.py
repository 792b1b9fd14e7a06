"""The key distribution seals outputs' secrets with in tests (docs/adr/0020): one key file per
test session, named by `BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE` in the environment every service
process of the session inherits; in-process services take `secrets_key_file=session_key_file()`."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from functools import cache
from pathlib import Path

from services.distribution.keyring import write_new_key_file

KEY_FILE_ENV = "BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE"


@cache
def session_key_file() -> str:
    folder = Path(tempfile.mkdtemp(prefix="baycast-secrets-key-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "key"
    write_new_key_file(path)
    return str(path)


def export_session_key_file() -> None:
    """Name the session's key file in this process's environment (children inherit it)."""
    os.environ.setdefault(KEY_FILE_ENV, session_key_file())
