"""`baycast ctl rundown load|start|next|prev|stop|status|asrun`."""

from __future__ import annotations

import argparse
import asyncio
import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path

import nats.js.api

from services.common.bus import PREFIX, decode, subject
from services.common.ctl import Ctl, print_table, run_verb
from services.common.gen.baycast.v1 import rundown_pb2
from services.mixer.rundown import ASRUN_STREAM, load_rundown_file

RCmd = rundown_pb2.RundownCommand
Verb = Callable[[Ctl, argparse.Namespace], Awaitable[int]]


def _time(us: int) -> str:
    return datetime.datetime.fromtimestamp(us / 1e6).strftime("%H:%M:%S.%f")[:-3]


def _entry_row(e: rundown_pb2.AsRunEntry) -> dict[str, str]:
    return {
        "time": _time(e.time_us),
        "segment": str(e.segment),
        "title": e.title,
        "cue": e.cue,
        "detail": e.detail,
        "ok": "ok" if e.ok else f"REFUSED {e.error}",
    }


async def _send(ctl: Ctl, prod: str, command: rundown_pb2.RundownCommand) -> int:
    status = await ctl.command(
        subject("prod", prod, "rundown", "cmd"), command, rundown_pb2.RundownStatus
    )
    segments = status.rundown.segments
    where = (
        f"segment {status.segment + 1}/{len(segments)} {segments[status.segment].title!r}"
        if 0 <= status.segment < len(segments)
        else "not started"
    )
    state = "running" if status.running else "stopped"
    print(f"{prod}: rundown {status.rundown.name!r} {state}, {where}")
    if command.WhichOneof("command") == "status" and status.recent:
        print_table(
            [_entry_row(e) for e in status.recent],
            ["time", "segment", "title", "cue", "detail", "ok"],
        )
    return 0


async def _load(ctl: Ctl, args: argparse.Namespace) -> int:
    rundown = await asyncio.to_thread(load_rundown_file, Path(args.file))
    return await _send(ctl, args.prod, RCmd(load=rundown))


async def _start(ctl: Ctl, args: argparse.Namespace) -> int:
    return await _send(ctl, args.prod, RCmd(start=RCmd.Start(segment=args.segment)))


async def _asrun(ctl: Ctl, args: argparse.Namespace) -> int:
    """The whole as-run log of a production, oldest first, from the ASRUN stream."""
    js = ctl.bus.nc.jetstream()
    subj = PREFIX + f"prod.{args.prod}.asrun"
    rows = []
    sub = await js.subscribe(
        subj,
        stream=ASRUN_STREAM,
        ordered_consumer=True,
        deliver_policy=nats.js.api.DeliverPolicy.ALL,
    )
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            rows.append(_entry_row(decode(msg.data, rundown_pb2.AsRunEntry)))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    print_table(rows, ["time", "segment", "title", "cue", "detail", "ok"])
    return 0


def _simple(command: rundown_pb2.RundownCommand) -> Verb:
    async def verb(ctl: Ctl, args: argparse.Namespace) -> int:
        return await _send(ctl, args.prod, command)

    return verb


def register(verbs: argparse._SubParsersAction) -> None:
    rundown = verbs.add_parser("rundown", help="load and run a show's rundown")
    rverbs = rundown.add_subparsers(dest="rundown_verb", required=True, metavar="VERB")

    def verb(name: str, help_text: str, fn: Verb) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = rverbs.add_parser(name, help=help_text)
        p.add_argument("prod", help="production id")
        p.set_defaults(run=lambda args: run_verb(args, fn))
        return p

    verb("load", "load a rundown (YAML or JSON) into a production", _load).add_argument("file")
    verb("start", "start the rundown (from its first segment)", _start).add_argument(
        "--segment", type=int, default=0, help="segment index to start from"
    )
    verb("next", "go to the next segment now", _simple(RCmd(next=RCmd.Next())))
    verb("prev", "go back to the previous segment", _simple(RCmd(prev=RCmd.Prev())))
    verb("stop", "stop the rundown (the picture stays as it is)", _simple(RCmd(stop=RCmd.Stop())))
    verb(
        "status",
        "where the rundown stands, and its latest cues",
        _simple(RCmd(status=RCmd.Status())),
    )
    verb("asrun", "the production's whole as-run log", _asrun)
