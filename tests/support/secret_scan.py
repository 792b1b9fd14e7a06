"""Where secrets show: a search of process lists and log lines for known secret values.

    leaks = find_secrets({"ps": ps_text, "ingest.log": log_text}, {"stream key": key, ...})
    assert leaks == []

A secret counts as found as it is and in the forms a URL or a header would carry it
(percent-encoded, base64). A finding names where, which secret and the line, with the secret
itself replaced, so a failing test does not print it either.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

MIN_SECRET = 8  # shorter values would match ordinary text


@dataclass(frozen=True)
class Leak:
    where: str
    secret: str  # the secret's name, never its value
    line: str  # with the value replaced by <secret name>

    def __str__(self) -> str:
        return f"{self.where}: {self.secret}: {self.line[:300]}"


def forms(value: str) -> set[str]:
    """The spellings of `value` to look for."""
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    }


def find_secrets(texts: Mapping[str, str], secrets: Mapping[str, str]) -> list[Leak]:
    """Every line of every text that holds one of the secrets, in any of its forms."""
    for name, value in secrets.items():
        if len(value) < MIN_SECRET:
            raise ValueError(f"{name} is too short to search for")
    leaks = []
    for where, text in texts.items():
        for line in text.splitlines():
            for name, value in secrets.items():
                found = [form for form in forms(value) if form in line]
                if found:
                    shown = line
                    for form in found:
                        shown = shown.replace(form, f"<{name}>")
                    leaks.append(Leak(where, name, shown))
    return leaks


def process_list() -> str:
    """Every process on the machine with its parent and its full argument list, as `ps` shows
    anyone on it: `pid ppid args` a line."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,args="],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return out.stdout
