"""The operator's side of the bus, shared by every `baycast ctl` verb.

The NATS address comes from `--nats`, then `BAYCAST_NATS_URL`, then the endpoints file that
`baycast up` writes, so that after `make run` a second terminal just works. A command is retried
through a NATS outage with the same command id, so the service applies it once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from services.common import errors
from services.common.bus import Bus
from services.common.settings import DEFAULT_NATS_URL
from services.common.tls import InternalTls

ENDPOINTS_FILE = Path(".baycast/endpoints.json")
RETRY_FOR_S = 30.0

R = TypeVar("R", bound=Message)


def read_endpoints(path: Path = ENDPOINTS_FILE) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    except (OSError, ValueError):
        return {}


def nats_url(args: argparse.Namespace) -> str:
    return (
        getattr(args, "nats", None)
        or os.environ.get("BAYCAST_NATS_URL")
        or read_endpoints().get("nats")
        or DEFAULT_NATS_URL
    )


def operator_tls() -> InternalTls:
    """The CA (and the internal certificate, for gRPC) an operator's tools use: from
    `BAYCAST_TLS_CA_FILE`/`_CERT_FILE`/`_KEY_FILE`, else from the endpoints file of a
    `baycast up --tls`."""
    files = read_endpoints().get("tls", {})
    return InternalTls(
        *(
            os.environ.get(f"BAYCAST_TLS_{name.upper()}_FILE") or files.get(f"{name}_file", "")
            for name in ("ca", "cert", "key")
        )
    )


class Ctl:
    """An operator session on the bus."""

    def __init__(self, url: str) -> None:
        # A bucket ctl opens first is created at the deployment's replica count.
        replicas = os.environ.get("BAYCAST_JETSTREAM_REPLICAS", "1")
        self.bus = Bus(
            url,
            f"ctl-{uuid.uuid4().hex[:6]}",
            replicas=int(replicas) if replicas.isdigit() else 1,
            tls=operator_tls().nats_context(),
        )

    async def __aenter__(self) -> Ctl:
        await asyncio.wait_for(self.bus.connect(), timeout=RETRY_FOR_S)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.bus.drain()

    async def command(
        self, subj: str, command: Message, reply_type: type[R], *, operator: str = ""
    ) -> R:
        """Send `command`, retrying through outages for up to 30 s with one command id; on
        `operator`'s behalf when one is named (the as-run log says who)."""
        command_id = uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RETRY_FOR_S
        while True:
            try:
                return await self.bus.request(
                    subj, command, reply_type, command_id=command_id, operator=operator
                )
            except errors.Unavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.5)


def to_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_message(message: Message) -> None:
    print(json.dumps(to_dict(message), ensure_ascii=False, indent=2))


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns))


def run_verb(
    args: argparse.Namespace, verb: Callable[[Ctl, argparse.Namespace], Awaitable[int | None]]
) -> int:
    """Run one ctl verb: connect, call, print a clear error and a non-zero code on failure."""

    async def go() -> int | None:
        async with Ctl(nats_url(args)) as ctl:
            return await verb(ctl, args)

    try:
        return asyncio.run(go()) or 0
    except errors.BaycastError as exc:
        where = f" (field {exc.field})" if exc.field else ""
        print(f"error: {exc.code}: {exc.message}{where}", file=sys.stderr)
        return 2
    except TimeoutError:
        print(f"error: cannot reach NATS at {nats_url(args)}", file=sys.stderr)
        return 3
