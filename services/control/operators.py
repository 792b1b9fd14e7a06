"""Operators: the people in the control room, served on `operator.cmd` over the `operators` bucket.

Like stations: one `Operator` per id holding a random salt and `sha256(salt || token)`; the token
exists only in the reply to `add` or `rotate`. Rotating gives a new token and ends every session
and event stream of the old one; revoking clears the hash, so no token matches any more.
"""

from __future__ import annotations

from collections.abc import Callable

from services.common import errors
from services.common.credentials import PRINCIPAL_ID, with_new_token
from services.common.gen.baycast.v1 import operators_pb2
from services.common.kv_mirror import KvMirror
from services.common.media import now_us
from services.control import metrics

MAX_NAME_CHARS = 64
VERBS = "add, list, rotate, revoke or show"


def check_operator_id(operator_id: str, field: str) -> str:
    if not PRINCIPAL_ID.match(operator_id):
        raise errors.InvalidArgument(
            "an operator id is 1-32 characters of a-z, 0-9 and '-', not starting or ending "
            "with '-'",
            field=field,
        )
    return operator_id


def check_name(name: str, field: str) -> str:
    if not 1 <= len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise errors.InvalidArgument(
            f"a name is 1 to {MAX_NAME_CHARS} printable characters", field=field
        )
    return name


def check_role(role: operators_pb2.Role.ValueType, field: str) -> operators_pb2.Role.ValueType:
    if role not in operators_pb2.Role.values() or role == operators_pb2.ROLE_UNSPECIFIED:
        raise errors.InvalidArgument(
            "role must be ROLE_DIRECTOR, ROLE_GRAPHICS, ROLE_AUDIO or ROLE_VIEWER", field=field
        )
    return role


def info(operator: operators_pb2.Operator) -> operators_pb2.OperatorInfo:
    """What people see of an operator: never the hash or the salt."""
    return operators_pb2.OperatorInfo(
        id=operator.id,
        name=operator.name,
        role=operator.role,
        revoked=operator.revoked,
        created_at_us=operator.created_at_us,
        rotated_at_us=operator.rotated_at_us,
    )


class OperatorRegistry:
    """`operator.cmd`: add, list, show, rotate and revoke operators."""

    def __init__(self, operators: KvMirror[operators_pb2.Operator]) -> None:
        # Writes go to the bucket and, at once, to this replica's mirror: a token handed out
        # (or revoked) here works (or stops) at once here, before the watch brings it back.
        self.mirror = operators
        self.bucket = operators.bucket

    async def handle(self, command: operators_pb2.OperatorCommand) -> operators_pb2.OperatorReply:
        verb = command.WhichOneof("command")
        try:
            reply = await self._dispatch(command, verb)
        except errors.BaycastError as exc:
            metrics.OPERATOR_COMMANDS.labels(verb or "none", exc.code).inc()
            raise
        metrics.OPERATOR_COMMANDS.labels(verb or "none", "ok").inc()
        return reply

    async def _dispatch(
        self, command: operators_pb2.OperatorCommand, verb: str | None
    ) -> operators_pb2.OperatorReply:
        if verb is None:
            raise errors.InvalidArgument(f"one of {VERBS} is required", field="command")
        if verb == "add":
            return await self.add(command.add)
        if verb == "list":
            operators = await self.bucket.items()
            return operators_pb2.OperatorReply(
                operators=[info(o) for _, o in sorted(operators.items())]
            )
        ref: operators_pb2.OperatorRef = getattr(command, verb)
        check_operator_id(ref.id, f"{verb}.id")
        if verb == "show":
            entry = await self.bucket.get(ref.id)
            if entry is None:
                raise errors.NotFound(f"no operator {ref.id!r}", field="show.id")
            return operators_pb2.OperatorReply(operators=[info(entry.value)])
        if verb == "rotate":
            return await self.rotate(ref.id)
        return await self.revoke(ref.id)

    async def add(self, add: operators_pb2.AddOperator) -> operators_pb2.OperatorReply:
        check_operator_id(add.id, "add.id")
        name = check_name(add.name.strip(), "add.name")
        role = check_role(add.role, "add.role")
        now = now_us()
        operator, token = with_new_token(
            operators_pb2.Operator(
                id=add.id, name=name, role=role, created_at_us=now, rotated_at_us=now
            )
        )
        try:
            revision = await self.bucket.create(add.id, operator)
        except errors.AlreadyExists:
            raise errors.AlreadyExists(f"operator {add.id!r} exists", field="add.id") from None
        self.mirror.note(add.id, operator, revision)
        return operators_pb2.OperatorReply(operators=[info(operator)], token=token)

    async def rotate(self, operator_id: str) -> operators_pb2.OperatorReply:
        """A new token; the old one stops working at once. A revoked operator comes back."""
        tokens: list[str] = []

        def change(current: operators_pb2.Operator | None) -> operators_pb2.Operator:
            if current is None:
                raise errors.NotFound(f"no operator {operator_id!r}", field="rotate.id")
            operator, token = with_new_token(current)
            operator.revoked = False
            operator.rotated_at_us = now_us()
            tokens[:] = [token]
            return operator

        operator = await self.write(operator_id, change)
        return operators_pb2.OperatorReply(operators=[info(operator)], token=tokens[0])

    async def revoke(self, operator_id: str) -> operators_pb2.OperatorReply:
        """No token of the operator works any more; its sessions and streams end."""

        def change(current: operators_pb2.Operator | None) -> operators_pb2.Operator:
            if current is None:
                raise errors.NotFound(f"no operator {operator_id!r}", field="revoke.id")
            operator = operators_pb2.Operator()
            operator.CopyFrom(current)
            operator.revoked = True
            operator.token_salt = ""
            operator.token_sha256 = ""
            return operator

        operator = await self.write(operator_id, change)
        return operators_pb2.OperatorReply(operators=[info(operator)])

    async def write(
        self,
        operator_id: str,
        change: Callable[[operators_pb2.Operator | None], operators_pb2.Operator],
    ) -> operators_pb2.Operator:
        entry = await self.bucket.update_entry(operator_id, change)
        self.mirror.note(operator_id, entry.value, entry.revision)
        return entry.value
