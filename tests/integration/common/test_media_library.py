"""The media library against a real nats-server that enforces the services' grants: `admin` (the
operator's `baycast ctl media`) keeps it, the mixer fetches from it and may not write it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common import errors
from services.common.bus import Bus
from services.common.media_library import (
    MEDIA_STREAM,
    MediaLibrary,
    MediaNotFound,
    probe,
)
from services.common.nats_accounts import generate_passwords, server_config, user_url
from services.mixer.media_ctl import size_text
from tests.support.media_files import write_clip, write_still
from tests.support.nats import NatsServer, permission_violations

pytestmark = pytest.mark.timeout(90)

USERS = ("admin", "mixer")


def start_server(
    tmp_path: Path, jetstream: dict[str, object] | None = None
) -> tuple[NatsServer, dict[str, str]]:
    """A nats-server with the grants of `USERS`; their URLs."""
    passwords = generate_passwords(USERS)
    config = json.loads(server_config(passwords))
    if jetstream:
        config["jetstream"] = jetstream
    (tmp_path / "nats.conf").write_text(json.dumps(config))
    server = NatsServer(config=str(tmp_path / "nats.conf")).start()
    return server, {u: user_url(server.url, u, p) for u, p in passwords.items()}


@pytest.fixture
def granted(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, str]]]:
    server, urls = start_server(tmp_path)
    yield server, urls
    server.cleanup()


@pytest.fixture
def urls(granted: tuple[NatsServer, dict[str, str]]) -> dict[str, str]:
    return granted[1]


def refusals(server: NatsServer) -> list[str]:
    """What the server's log says it refused."""
    return permission_violations(Path(server.log_path).read_text())


async def connect(url: str) -> Bus:
    bus = Bus(url, "test-media")
    await bus.connect()
    return bus


@pytest.fixture
async def admin(urls: dict[str, str]) -> AsyncIterator[MediaLibrary]:
    bus = await connect(urls["admin"])
    yield await MediaLibrary.open(bus, create=True)
    await bus.drain()


@pytest.fixture
async def mixer(urls: dict[str, str]) -> AsyncIterator[MediaLibrary]:
    bus = await connect(urls["mixer"])
    # Its refused writes are known to fail only when they time out: a second, not five.
    yield await MediaLibrary.open(bus, create=False, timeout_s=1.0)
    await bus.drain()


def big_clip(folder: Path, name: str = "opener.mp4") -> Path:
    """Two seconds of noise at 320x180: about 2.2 MB, seventeen chunks."""
    path = write_clip(folder / name, seconds=2.0, noise=True)
    assert path.stat().st_size > 1_500_000
    return path


async def test_admin_adds_and_lists_the_mixer_fetches_once(
    admin: MediaLibrary,
    mixer: MediaLibrary,
    granted: tuple[NatsServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    clip, still = big_clip(tmp_path), write_still(tmp_path / "card.png")
    progress: list[tuple[int, int]] = []
    added = await admin.add(clip, "opener", progress=lambda *p: progress.append(p))
    assert (added.kind, added.duration_ms, added.width, added.height) == ("clip", 2000, 320, 180)
    assert (added.size, added.sha256) == (clip.stat().st_size, probe(clip, "x").sha256)
    # Reported as the chunks are stored, ending with the whole.
    assert len(progress) >= 17 and progress[-1] == (added.size, added.size)
    assert [s for s, _ in progress] == sorted(s for s, _ in progress)
    await admin.add(still, "card")
    assert [i.id for i in await admin.list()] == ["card", "opener"]
    assert [i.id for i in await mixer.list()] == ["card", "opener"]
    assert await mixer.item("opener") == added

    path = await mixer.fetch("opener", cache)
    assert path == cache / f"opener-{added.sha256[:12]}.mp4"
    assert path.read_bytes() == clip.read_bytes()
    first = path.stat()
    # The second time the copy is there: not fetched again, not rewritten.
    assert await mixer.fetch("opener", cache) == path
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no partial file left

    # An id is added once; --replace makes it another object, which a mixer fetches anew.
    with pytest.raises(errors.AlreadyExists):
        await admin.add(still, "opener")
    short = write_clip(tmp_path / "short.mkv", audio=None)
    replaced = await admin.add(short, "opener", replace=True)
    assert (replaced.duration_ms, replaced.size) == (1000, short.stat().st_size)
    again = await mixer.fetch("opener", cache)
    assert again.name == f"opener-{replaced.sha256[:12]}.mkv"
    assert again.read_bytes() == short.read_bytes()
    # All of it within the grants: the server refused nothing.
    assert refusals(granted[0]) == []


async def test_the_mixer_may_not_write_the_library(
    admin: MediaLibrary,
    mixer: MediaLibrary,
    granted: tuple[NatsServer, dict[str, str]],
    tmp_path: Path,
) -> None:
    await admin.add(write_still(tmp_path / "card.png"), "card")
    # The server refuses the writes; the library says so rather than "timed out".
    with pytest.raises(errors.PermissionDenied, match="the NATS user mixer may not"):
        await mixer.add(write_still(tmp_path / "other.jpg"), "other")
    with pytest.raises(errors.PermissionDenied, match="the NATS user mixer may not"):
        await mixer.remove("card")
    assert [i.id for i in await admin.list()] == ["card"]
    refused = refusals(granted[0])
    assert refused and all('user:mixer"' in line for line in refused), refused


async def test_a_removed_item_is_not_found(
    admin: MediaLibrary, mixer: MediaLibrary, tmp_path: Path
) -> None:
    still = write_still(tmp_path / "card.jpg")
    await admin.add(still, "card")
    removed = await admin.remove("card")
    assert (removed.id, removed.kind) == ("card", "still")
    with pytest.raises(MediaNotFound):
        await admin.remove("card")
    with pytest.raises(MediaNotFound) as caught:
        await mixer.fetch("card", tmp_path / "cache")
    assert isinstance(caught.value, LookupError)
    assert caught.value.code == "NOT_FOUND"
    assert await mixer.list() == [] and await admin.list() == []


async def test_a_library_nobody_added_to_reads_empty(mixer: MediaLibrary, tmp_path: Path) -> None:
    assert await mixer.list() == []
    with pytest.raises(MediaNotFound):
        await mixer.fetch("opener", tmp_path)


async def test_a_file_that_changes_while_it_is_added_is_not_kept(
    admin: MediaLibrary, tmp_path: Path
) -> None:
    clip = big_clip(tmp_path)

    def grow(stored: int, _total: int) -> None:
        if stored == 0:  # the first chunk is being read: the end of the file is still to come
            with clip.open("ab") as file:
                file.write(b"\0" * 1000)

    with pytest.raises(errors.Conflict, match="changed while it was being added"):
        await admin.add(clip, "opener", progress=grow)
    assert await admin.list() == []


async def test_a_full_store_refuses_and_keeps_nothing(tmp_path: Path) -> None:
    server, urls = start_server(tmp_path, {"max_file_store": 1024 * 1024})
    try:
        bus = await connect(urls["admin"])
        library = await MediaLibrary.open(bus, create=True)
        with pytest.raises(errors.Unavailable, match="its store may be full"):
            await library.add(big_clip(tmp_path), "opener")
        assert await library.list() == []
        info = await bus.nc.jetstream().stream_info(MEDIA_STREAM)
        assert info.state.bytes == 0  # its chunks were taken back
        await bus.drain()
    finally:
        server.cleanup()


def ctl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "ctl", "--nats", url, "media", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "BAYCAST_LOG_FORMAT": "json"},
    )


async def test_ctl_media_adds_lists_and_removes(urls: dict[str, str], tmp_path: Path) -> None:
    clip, text = write_clip(tmp_path / "opener.mp4", fps=30), tmp_path / "notes.txt"
    text.write_text("no picture here\n")
    empty = await asyncio.to_thread(ctl, urls["admin"], "list")
    assert (empty.returncode, empty.stdout.strip()) == (0, "(none)")

    run = await asyncio.to_thread(ctl, urls["admin"], "add", str(clip), "--id", "opener")
    assert run.returncode == 0, run.stderr
    printed = json.loads(run.stdout)
    assert (printed["id"], printed["kind"], printed["duration_ms"]) == ("opener", "clip", 1000)
    # prepared in the house format first (ADR 0027), its progress told a tenth at a time
    assert printed["house"] is True and printed["sha256"] != probe(clip, "x").sha256
    preparing = [line for line in run.stderr.splitlines() if "preparing" in line]
    assert preparing == [f"opener: preparing {tenth * 10}%" for tenth in range(11)]
    kept = await asyncio.to_thread(ctl, urls["admin"], "add", str(clip), "--id", "kept", "--as-is")
    assert kept.returncode == 0, kept.stderr
    assert "preparing" not in kept.stderr
    as_is = json.loads(kept.stdout)
    assert (as_is["house"], as_is["sha256"]) == (False, probe(clip, "x").sha256)

    for args, code, says in (
        (("add", str(clip), "--id", "opener"), 2, "ALREADY_EXISTS"),
        (("add", str(text), "--id", "notes"), 2, "INVALID_ARGUMENT"),
        (("remove", "nothing"), 2, "NOT_FOUND"),
    ):
        refused = await asyncio.to_thread(ctl, urls["admin"], *args)
        assert (refused.returncode, refused.stdout) == (code, ""), refused.stderr
        assert says in refused.stderr
        assert "preparing" not in refused.stderr  # refused before any work

    listed = await asyncio.to_thread(ctl, urls["admin"], "list")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "DURATION", "SIZE", "PICTURE", "FPS", "AUDIO", "HOUSE"]
    size, kept_size = size_text(printed["size"]).split(), size_text(as_is["size"]).split()
    assert [row.split() for row in rows] == [
        ["kept", "clip", "0:01.0", *kept_size, "320x180", "30", "yes", "no"],
        ["opener", "clip", "0:01.0", *size, "320x180", "30", "yes", "yes"],
    ]
    removed = await asyncio.to_thread(ctl, urls["admin"], "remove", "opener")
    assert removed.returncode == 0
    assert removed.stdout.strip() == f"removed opener (clip, {size_text(printed['size'])})"
