"""At most two malloc arenas a service process (ADR 0028): the launcher and the image set it, and
glibc honours it in a real process whose threads allocate."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.up import launcher
from services.up.launcher import MALLOC_TUNABLES, Console, Launcher

REPO = Path(__file__).resolve().parents[3]

# Eight threads allocate and free at the same time, as a service's decoder, encoder and gRPC
# threads do; glibc's malloc_info then lists the arenas (one <heap> element each).
ARENAS = """
import ctypes, threading
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    for _ in range(2000):
        blocks = [bytearray(4096) for _ in range(16)]
        del blocks
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL("libc.so.6")
libc.open_memstream.restype = ctypes.c_void_p
buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
libc.malloc_info(0, ctypes.c_void_p(stream))
libc.fclose(ctypes.c_void_p(stream))
print(buffer.value.decode().count("<heap nr="))
"""


def arenas(tunables: str | None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables is not None:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run(
        [sys.executable, "-c", ARENAS], env=env, capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_glibc_keeps_a_process_to_two_arenas_with_the_tunable() -> None:
    assert arenas(MALLOC_TUNABLES) <= 2
    assert arenas(None) > 2  # the default: an arena for each new thread that allocates


def test_the_launcher_gives_each_service_the_tunable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    local = Launcher(tmp_path, "127.0.0.1", Console())
    for name in launcher.SERVICES:
        assert local.service_child(name, {}).env["GLIBC_TUNABLES"] == MALLOC_TUNABLES
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=4")  # the operator's own stays
    assert local.service_child("mixer", {}).env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=4"


def test_the_image_sets_the_same_tunable() -> None:
    assert f"GLIBC_TUNABLES={MALLOC_TUNABLES}" in (REPO / "Dockerfile").read_text()
