"""The role check the control service makes for every bridged command; the table itself is
`services/common/roles.py`, shared with the bus's grants.
"""

from __future__ import annotations

from google.protobuf.message import Message

from services.common import errors
from services.common.credentials import ROLE_NAMES
from services.common.roles import (
    READ_KINDS,
    READS,
    ROLE_WRITES,
    WRITE_KINDS,
    WRITES,
    Role,
    role_kinds,
)

__all__ = ["READS", "READ_KINDS", "ROLE_WRITES", "WRITES", "WRITE_KINDS", "Role"]


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
    return kind in role_kinds(role)


def authorize(role: Role, kind: str) -> None:
    """PermissionDenied naming the command's field unless `role` may send `kind`."""
    if allowed(role, kind):
        return
    verb = kind.partition(".")[2]
    who = ROLE_NAMES.get(role, "unknown")
    raise errors.PermissionDenied(f"the {who} role may not send {kind}", field=verb)


def permissions(role: Role) -> list[str]:
    """Every kind `role` may send, sorted (shown to pages by GET /api/me)."""
    return sorted(role_kinds(role))
