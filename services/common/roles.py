"""What each control-room role may send: one table, for the control service's check of every
command (services/control/roles.py) and for the bus's grants (nats_accounts.py), which let each
role's NATS user publish only its verbs.

A command is known by its kind, `<service>.<verb>`: the service it goes to (mixer, rundown, gfx,
dist, exchange) and the field set in its `command` oneof, which is also the last token of the
subject it travels on (`baycast.v1.prod.<p>.mixer.cmd.cut`: bus.py). Reads (state, lists, a
graphics preview, which renders without airing) are open to every operator; each write to the
roles listed for it:

    director   everything
    graphics   gfx.show, gfx.hide, gfx.update, gfx.ticker_add
    audio      mixer.audio
    viewer     nothing (reads only)

A verb this table does not know is refused for everyone, so a verb added to a proto file stays
closed until someone decides who may send it (a unit test says which).
"""

from __future__ import annotations

from typing import TypeAlias

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
    "mixer": (
        "take",
        "cut",
        "auto",
        "preview",
        "layout",
        "audio",
        "ftb",
        "talk",
        "manual",
        "transport",
    ),
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
# Each role's NATS user (the control service sends an operator's commands through it).
ROLE_USERS: dict[Role, str] = {
    operators_pb2.ROLE_DIRECTOR: "role_director",
    operators_pb2.ROLE_GRAPHICS: "role_graphics",
    operators_pb2.ROLE_AUDIO: "role_audio",
    operators_pb2.ROLE_VIEWER: "role_viewer",
}


def role_kinds(role: Role) -> frozenset[str]:
    """Every kind `role` may send."""
    return READ_KINDS | ROLE_WRITES.get(role, frozenset())
