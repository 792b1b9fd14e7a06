"""What each role may send: the role table, enforced by the server for every bridged command.

A command is known by its kind, `<service>.<verb>`: the service it goes to (mixer, rundown, gfx,
dist, exchange) and the field set in its `command` oneof. Reads (state, lists, a graphics preview,
which renders without airing) are open to every operator; each write to the roles listed for it:

    director   everything
    graphics   gfx.show, gfx.hide, gfx.update, gfx.ticker_add
    audio      mixer.audio
    viewer     nothing (reads only)

A verb this table does not know is refused for everyone, so a verb added to a proto file stays
closed until someone decides who may send it (a unit test says which).
"""

from __future__ import annotations

from typing import TypeAlias

from google.protobuf.message import Message

from services.common import errors
from services.common.credentials import ROLE_NAMES
from services.common.gen.baycast.v1 import operators_pb2

Role: TypeAlias = operators_pb2.Role.ValueType

READS: dict[str, tuple[str, ...]] = {
    "mixer": ("get",),
    "rundown": ("status",),
    "gfx": ("list", "templates", "preview"),
    "dist": ("list",),
    "exchange": ("cues", "viewers", "feeds"),
}
WRITES: dict[str, tuple[str, ...]] = {
    "mixer": ("take", "cut", "auto", "preview", "layout", "audio", "ftb", "talk", "manual"),
    "rundown": ("load", "start", "next", "prev", "stop"),
    "gfx": ("show", "hide", "update", "ticker_add"),
    "dist": ("add", "remove", "start", "stop"),
    "exchange": ("cue", "clear"),
}
READ_KINDS = frozenset(f"{service}.{verb}" for service, verbs in READS.items() for verb in verbs)
WRITE_KINDS = frozenset(f"{service}.{verb}" for service, verbs in WRITES.items() for verb in verbs)

ROLE_WRITES: dict[Role, frozenset[str]] = {
    operators_pb2.ROLE_DIRECTOR: WRITE_KINDS,
    operators_pb2.ROLE_GRAPHICS: frozenset(f"gfx.{verb}" for verb in WRITES["gfx"]),
    operators_pb2.ROLE_AUDIO: frozenset({"mixer.audio"}),
    operators_pb2.ROLE_VIEWER: frozenset(),
}


def command_kind(service: str, command: Message) -> str:
    """`mixer.cut` for a MixerCommand with `cut` set; InvalidArgument when none is."""
    verb = command.WhichOneof("command")
    if verb is None:
        verbs = ", ".join(f.name for f in command.DESCRIPTOR.oneofs_by_name["command"].fields)
        raise errors.InvalidArgument(f"one of {verbs} is required", field="command")
    return f"{service}.{verb}"


def is_write(kind: str) -> bool:
    return kind not in READ_KINDS


def allowed(role: Role, kind: str) -> bool:
    return kind in READ_KINDS or kind in ROLE_WRITES.get(role, frozenset())


def authorize(role: Role, kind: str) -> None:
    """PermissionDenied naming the command's field unless `role` may send `kind`."""
    if allowed(role, kind):
        return
    verb = kind.partition(".")[2]
    who = ROLE_NAMES.get(role, "unknown")
    raise errors.PermissionDenied(f"the {who} role may not send {kind}", field=verb)


def permissions(role: Role) -> list[str]:
    """Every kind `role` may send, sorted (shown to pages by GET /api/me)."""
    return sorted(READ_KINDS | ROLE_WRITES.get(role, frozenset()))
