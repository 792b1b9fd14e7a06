"""Operators over NATS (`operator.cmd`), their tokens at the HTTP edge, `baycast ctl operator`."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from services.common import errors
from services.common.bus import Bus, encode
from services.common.credentials import token_matches
from services.common.gen.baycast.v1 import operators_pb2
from services.control.service import ControlService
from tests.integration.control.conftest import base_url, operator_cmd
from tests.support.mixer import unique
from tests.support.nats import NatsServer

Op = operators_pb2.OperatorCommand
REVOKE_WITHIN_S = 2.0


async def me_status(http: aiohttp.ClientSession, control: ControlService, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with http.get(base_url(control) + "/api/me", headers=headers) as response:
        return response.status


async def seconds_until_refused(
    http: aiohttp.ClientSession, control: ControlService, token: str
) -> float:
    """How long after now the token is answered 401 (polled; fails past the limit)."""
    started = time.monotonic()
    while time.monotonic() - started < REVOKE_WITHIN_S + 1:
        if await me_status(http, control, token) == 401:
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError("the token still works")


async def test_add_list_show_rotate_revoke(
    bus: Bus, control: ControlService, http: aiohttp.ClientSession
) -> None:
    op_id = unique("zhang")
    add = Op(add=operators_pb2.AddOperator(id=op_id, name="张导", role=operators_pb2.ROLE_DIRECTOR))
    reply = await operator_cmd(bus, add)
    token = reply.token
    assert len(token) >= 40
    (info,) = reply.operators
    assert (info.id, info.name, info.role, info.revoked) == (
        op_id,
        "张导",
        operators_pb2.ROLE_DIRECTOR,
        False,
    )
    # The bucket holds a salted hash, never the token.
    stored = await (await bus.kv("operators", operators_pb2.Operator)).get(op_id)
    assert stored is not None and token_matches(stored.value, token)
    assert token not in encode(stored.value).decode()
    assert "tokenSha256" not in encode(info).decode()

    assert await me_status(http, control, token) == 200

    listed = await operator_cmd(bus, Op(list=operators_pb2.ListOperators()))
    assert op_id in [o.id for o in listed.operators]
    shown = await operator_cmd(bus, Op(show=operators_pb2.OperatorRef(id=op_id)))
    assert shown.operators[0].name == "张导" and not shown.token

    rotated = await operator_cmd(bus, Op(rotate=operators_pb2.OperatorRef(id=op_id)))
    assert rotated.token and rotated.token != token
    assert await seconds_until_refused(http, control, token) < REVOKE_WITHIN_S
    assert await me_status(http, control, rotated.token) == 200

    revoked = await operator_cmd(bus, Op(revoke=operators_pb2.OperatorRef(id=op_id)))
    assert revoked.operators[0].revoked and not revoked.token
    assert await seconds_until_refused(http, control, rotated.token) < REVOKE_WITHIN_S
    # Rotating a revoked operator gives it a working token again.
    back = await operator_cmd(bus, Op(rotate=operators_pb2.OperatorRef(id=op_id)))
    assert not back.operators[0].revoked
    for _ in range(40):
        if await me_status(http, control, back.token) == 200:
            break
        await asyncio.sleep(0.05)
    assert await me_status(http, control, back.token) == 200


@pytest.mark.parametrize(
    ("command", "error", "field"),
    [
        (Op(), errors.InvalidArgument, "command"),
        (
            Op(add=operators_pb2.AddOperator(id="Zhang!", name="x", role=1)),
            errors.InvalidArgument,
            "add.id",
        ),
        (
            Op(add=operators_pb2.AddOperator(id="ok-id", name="", role=1)),
            errors.InvalidArgument,
            "add.name",
        ),
        (
            Op(add=operators_pb2.AddOperator(id="ok-id", name="x" * 65, role=1)),
            errors.InvalidArgument,
            "add.name",
        ),
        (
            Op(add=operators_pb2.AddOperator(id="ok-id", name="a\nb", role=1)),
            errors.InvalidArgument,
            "add.name",
        ),
        (
            Op(add=operators_pb2.AddOperator(id="ok-id", name="x")),
            errors.InvalidArgument,
            "add.role",
        ),
        (
            Op(add=operators_pb2.AddOperator(id="ok-id", name="x", role=9)),
            errors.InvalidArgument,
            "add.role",
        ),
        (Op(show=operators_pb2.OperatorRef(id="nobody-here")), errors.NotFound, "show.id"),
        (Op(rotate=operators_pb2.OperatorRef(id="nobody-here")), errors.NotFound, "rotate.id"),
        (Op(revoke=operators_pb2.OperatorRef(id="no body")), errors.InvalidArgument, "revoke.id"),
    ],
)
async def test_refused_operator_commands_name_the_field(
    bus: Bus,
    control: ControlService,
    command: operators_pb2.OperatorCommand,
    error: type[errors.BaycastError],
    field: str,
) -> None:
    with pytest.raises(error) as refused:
        await operator_cmd(bus, command)
    assert refused.value.field == field


async def test_an_operator_id_is_taken_once(bus: Bus, control: ControlService) -> None:
    op_id = unique("li")
    add = Op(add=operators_pb2.AddOperator(id=op_id, name="李", role=operators_pb2.ROLE_AUDIO))
    await operator_cmd(bus, add)
    with pytest.raises(errors.AlreadyExists) as refused:
        await operator_cmd(bus, add)
    assert refused.value.field == "add.id"


async def ctl(cwd: Path, url: str, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "ctl",
        "--nats",
        url,
        "operator",
        *args,
        cwd=cwd,
        env={"PYTHONPATH": str(Path.cwd()), "PATH": "/usr/bin:/bin"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_ctl_operator_prints_the_token_once_with_a_login_link(
    nats_server: NatsServer, control: ControlService, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    state = tmp_path / ".baycast"
    state.mkdir()
    url = base_url(control)
    (state / "endpoints.json").write_text(json.dumps({"services": {"control": {"http": url}}}))
    op_id = unique("wang")
    code, out, _ = await ctl(
        tmp_path, nats_server.url, "add", op_id, "--name", "王美", "--role", "graphics"
    )
    assert code == 0, out
    lines = dict(
        line.split(None, 1) for line in out.splitlines() if line.startswith(("token", "login"))
    )
    token = lines["token"].strip()
    assert lines["login"].strip() == f"{url}/login#token={token}"
    assert await me_status(http, control, token) == 200

    code, out, _ = await ctl(tmp_path, nats_server.url, "list")
    assert code == 0 and any(op_id in row and "graphics" in row for row in out.splitlines())
    assert token not in out

    code, _, err = await ctl(tmp_path, nats_server.url, "add", op_id, "--role", "viewer")
    assert code == 2 and "ALREADY_EXISTS" in err and "add.id" in err
