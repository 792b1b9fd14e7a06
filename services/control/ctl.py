"""`baycast ctl operator ...`: the people in the control room, their roles and tokens."""

from __future__ import annotations

import argparse
import time
from typing import Any

from services.common.bus import subject
from services.common.credentials import ROLE_NAMES
from services.common.ctl import Ctl, print_message, print_table, read_endpoints, run_verb
from services.common.gen.baycast.v1 import operators_pb2

OPERATOR_COMMANDS = subject("operator", "cmd")
ROLES = {name: role for role, name in ROLE_NAMES.items()}


def control_url(args: argparse.Namespace) -> str:
    """Where the control room is: --url, else what `baycast up` wrote, else unknown ("")."""
    if getattr(args, "url", None):
        return str(args.url).rstrip("/")
    services = read_endpoints().get("services") or {}
    control = services.get("control") if isinstance(services, dict) else None
    return str(control.get("http", "")).rstrip("/") if isinstance(control, dict) else ""


def _when(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(us / 1e6)) if us else ""


async def _operator(ctl: Ctl, args: argparse.Namespace) -> int:
    verb = args.operator_verb
    if verb == "add":
        add = operators_pb2.AddOperator(
            id=args.id,
            name=args.name or args.id,
            role=ROLES.get(args.role, operators_pb2.ROLE_UNSPECIFIED),
        )
        command = operators_pb2.OperatorCommand(add=add)
    elif verb == "list":
        command = operators_pb2.OperatorCommand(list=operators_pb2.ListOperators())
    else:
        command = operators_pb2.OperatorCommand()
        getattr(command, verb).CopyFrom(operators_pb2.OperatorRef(id=args.id))
    reply = await ctl.command(OPERATOR_COMMANDS, command, operators_pb2.OperatorReply)
    if verb == "list":
        rows: list[dict[str, Any]] = [
            {
                "id": o.id,
                "name": o.name,
                "role": ROLE_NAMES.get(o.role, "?"),
                "revoked": "yes" if o.revoked else "",
                "created": _when(o.created_at_us),
                "rotated": _when(o.rotated_at_us),
            }
            for o in reply.operators
        ]
        print_table(rows, ["id", "name", "role", "revoked", "created", "rotated"])
        return 0
    operator = reply.operators[0]
    if not reply.token:
        print_message(operator)
        return 0
    print(f"operator  {operator.id} ({operator.name}, {ROLE_NAMES.get(operator.role, '?')})")
    print(f"token     {reply.token}")
    url = control_url(args)
    if url:
        print(f"login     {url}/login#token={reply.token}")
    print("The token is shown only now; the server keeps only its hash. The login link carries")
    print("it after '#', which browsers never send to a server. Controllers send it as")
    print("'Authorization: Bearer <token>'.")
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    operator = verbs.add_parser("operator", help="control-room operators: add, list, rotate ...")
    sub = operator.add_subparsers(dest="operator_verb", required=True, metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(run=lambda args: run_verb(args, _operator))
        return p

    p = add("add", "add an operator (prints its token once)")
    p.add_argument("id", help="operator id: a-z, 0-9 and '-', e.g. zhang")
    p.add_argument("--name", help="the name people know, e.g. 张导 (default: the id)")
    p.add_argument("--role", required=True, choices=sorted(ROLES), help="what the operator may do")
    p.add_argument("--url", help="the control room's URL for the login link")
    add("list", "every operator and its role")
    add("show", "one operator").add_argument("id")
    p = add("rotate", "a new token (the old one stops working at once)")
    p.add_argument("id")
    p.add_argument("--url", help="the control room's URL for the login link")
    add("revoke", "no token of the operator works any more").add_argument("id")
