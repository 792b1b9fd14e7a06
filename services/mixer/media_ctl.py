"""`baycast ctl media add|list|remove`: the media library, the clips and stills a production
plays as sources `clip/<id>` (docs/adr/0022).

    baycast ctl media add opener.mov --id opener     # prepare, probe, store (--replace to swap)
    baycast ctl media add film.mp4 --id film --as-is # store the clip as it is
    baycast ctl media list
    baycast ctl media remove opener

A clip is first prepared in the library's house format (ADR 0027), here, off the air, with its
progress on stderr; `--as-is` stores it unchanged (it then costs its own decoding on air).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from services.common import errors
from services.common.ctl import Ctl, print_table, run_verb
from services.common.house_format import needs_preparing, prepare
from services.common.media_library import MediaItem, MediaLibrary, MediaNotFound, check_media_id

Verb = Callable[[Ctl, argparse.Namespace], Awaitable[int]]
# Files from this size on show their progress on stderr, a line each tenth.
PROGRESS_FROM_BYTES = 8 * 1024 * 1024


def size_text(size: int) -> str:
    """`2.2 MB`, `31 kB`."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size / 1e3:.0f} kB"


def duration(ms: int) -> str:
    """`1:05.2`; a still has none."""
    if not ms:
        return "-"
    return f"{ms // 60000}:{ms % 60000 / 1000:04.1f}"


class ProgressLines:
    """`opener: 40% of 310.2 MB` on stderr as an upload passes each tenth (large files only)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tenth = -1

    def __call__(self, stored: int, total: int) -> None:
        if total < PROGRESS_FROM_BYTES or stored * 10 // total == self.tenth:
            return
        self.tenth = stored * 10 // total
        print(f"{self.name}: {stored * 100 // total}% of {size_text(total)}", file=sys.stderr)


class PreparingLines:
    """`opener: preparing 40%` on stderr as the house format passes each tenth of the clip."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tenth = -1

    def __call__(self, share: float) -> None:
        tenth = min(10, int(share * 10))
        if tenth == self.tenth:
            return
        self.tenth = tenth
        print(f"{self.name}: preparing {tenth * 10}%", file=sys.stderr)


def item_dict(item: MediaItem) -> dict[str, object]:
    return {**asdict(item), "added": item.added.isoformat()}


def item_row(item: MediaItem) -> dict[str, str]:
    return {
        "id": item.id,
        "kind": item.kind,
        "duration": duration(item.duration_ms),
        "size": size_text(item.size),
        "picture": f"{item.width}x{item.height}",
        "fps": f"{item.fps:g}" if item.fps else "-",
        "audio": "yes" if item.has_audio else "no",
        "house": ("yes" if item.house else "no") if item.kind == "clip" else "-",
    }


async def _add(ctl: Ctl, args: argparse.Namespace) -> int:
    check_media_id(args.id)
    library = await MediaLibrary.open(ctl.bus, create=True)
    if not args.replace:  # refused now, not after minutes of preparing
        try:
            await library.item(args.id)
        except MediaNotFound:
            pass
        else:
            raise errors.AlreadyExists(
                f"{args.id!r} is in the media library already (--replace replaces it)",
                field="id",
            )
    with tempfile.TemporaryDirectory(prefix="baycast-media-") as folder:
        path: Path = args.file
        if not args.as_is and await asyncio.to_thread(needs_preparing, path):
            target = Path(folder) / f"{path.stem}.mp4"
            path = await asyncio.to_thread(prepare, path, target, PreparingLines(args.id))
        item = await library.add(
            path, args.id, replace=args.replace, progress=ProgressLines(args.id)
        )
    print(json.dumps(item_dict(item), ensure_ascii=False, indent=2))
    return 0


async def _list(ctl: Ctl, _args: argparse.Namespace) -> int:
    library = await MediaLibrary.open(ctl.bus, create=False)
    rows = [item_row(item) for item in await library.list()]
    print_table(rows, ["id", "kind", "duration", "size", "picture", "fps", "audio", "house"])
    return 0


async def _remove(ctl: Ctl, args: argparse.Namespace) -> int:
    library = await MediaLibrary.open(ctl.bus, create=False)
    item = await library.remove(args.id)
    print(f"removed {item.id} ({item.kind}, {size_text(item.size)})")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    media = verbs.add_parser(
        "media", help="add, list or remove clips and stills of the media library"
    )
    mverbs = media.add_subparsers(dest="media_verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str, fn: Verb) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = mverbs.add_parser(name, help=help_text)
        p.set_defaults(run=lambda args: run_verb(args, fn))
        return p

    p = verb(
        "add",
        "prepare a clip (video file) in the house format or take a still (PNG, JPEG); store it",
        _add,
    )
    p.add_argument("file", type=Path)
    p.add_argument("--id", required=True, help="its media id: a production's source clip/<id>")
    p.add_argument("--replace", action="store_true", help="replace the item of that id")
    p.add_argument(
        "--as-is",
        action="store_true",
        help="store a clip unchanged, not in the house format (it costs its own decoding on air)",
    )
    verb("list", "the library's items", _list)
    verb("remove", "remove an item", _remove).add_argument("id")
