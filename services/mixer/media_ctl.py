"""`baycast ctl media add|list|remove`: the media library, the clips and stills a production
plays as sources `clip/<id>` (docs/adr/0022).

    baycast ctl media add opener.mp4 --id opener     # probe, then store it (--replace to swap)
    baycast ctl media list
    baycast ctl media remove opener
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from pathlib import Path

from services.common.ctl import Ctl, print_table, run_verb
from services.common.media_library import MediaItem, MediaLibrary

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
    }


async def _add(ctl: Ctl, args: argparse.Namespace) -> int:
    library = await MediaLibrary.open(ctl.bus, create=True)
    item = await library.add(
        args.file, args.id, replace=args.replace, progress=ProgressLines(args.id)
    )
    print(json.dumps(item_dict(item), ensure_ascii=False, indent=2))
    return 0


async def _list(ctl: Ctl, _args: argparse.Namespace) -> int:
    library = await MediaLibrary.open(ctl.bus, create=False)
    rows = [item_row(item) for item in await library.list()]
    print_table(rows, ["id", "kind", "duration", "size", "picture", "fps", "audio"])
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

    p = verb("add", "probe a clip (video file) or still (PNG, JPEG) and store it", _add)
    p.add_argument("file", type=Path)
    p.add_argument("--id", required=True, help="its media id: a production's source clip/<id>")
    p.add_argument("--replace", action="store_true", help="replace the item of that id")
    verb("list", "the library's items", _list)
    verb("remove", "remove an item", _remove).add_argument("id")
