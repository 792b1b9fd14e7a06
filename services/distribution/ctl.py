"""`baycast ctl output add|remove|start|stop|list`: a production's outputs.

Secrets never go on the command line (shell history, `ps`): the stream key and the SRT
passphrase come from a file (`--stream-key-file`, `--passphrase-file`) or from the environment
(`BAYCAST_STREAM_KEY`, `BAYCAST_SRT_PASSPHRASE`).

A station's SRT return (its decoder gets the picture with its mix-minus, docs/adr/0012):

    baycast ctl output add --prod P gz-return --kind srt --station gz [--listen] \
        --url srt://host:port [--picture clean]

with the station's own passphrase when none is given.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from services.common.bus import subject
from services.common.ctl import Ctl, print_table, run_verb
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution import exchange_ctl

KINDS = {
    "rtmp": dist.OUTPUT_KIND_RTMP,
    "rtmps": dist.OUTPUT_KIND_RTMPS,
    "srt": dist.OUTPUT_KIND_SRT,
    "hls": dist.OUTPUT_KIND_HLS,
    "recording": dist.OUTPUT_KIND_RECORDING,
}
FORMATS = {"ts": dist.RECORDING_FORMAT_MPEGTS, "fmp4": dist.RECORDING_FORMAT_FMP4}
STREAM_KEY_ENV = "BAYCAST_STREAM_KEY"
PASSPHRASE_ENV = "BAYCAST_SRT_PASSPHRASE"


def _secret(path: str | None, env: str) -> str:
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(env, "")


def build_command(args: argparse.Namespace) -> dist.DistCommand:
    command = dist.DistCommand(production=args.prod)
    if args.action == "add":
        command.add.output.CopyFrom(
            dist.OutputSpec(
                id=args.id,
                kind=KINDS[args.kind],
                url=args.url or "",
                stream_key=_secret(args.stream_key_file, STREAM_KEY_ENV)
                if args.kind in ("rtmp", "rtmps")
                else "",
                passphrase=_secret(args.passphrase_file, PASSPHRASE_ENV)
                if args.kind == "srt"
                else "",
                enabled=not args.stopped,
                recording_format=FORMATS[args.format],
                segment_seconds=args.segment_seconds,
                label=args.label,
                ladder=args.ladder,
                station=args.station,
                srt_mode=dist.SRT_MODE_LISTENER if args.listen else dist.SRT_MODE_UNSPECIFIED,
                picture=args.picture,
            )
        )
    elif args.action == "list":
        command.list.SetInParent()
    else:
        getattr(command, args.action).id = args.id
    return command


def rows(reply: dist.DistReply) -> list[dict[str, Any]]:
    return [
        {
            "id": s.id,
            "kind": dist.OutputKind.Name(s.kind).removeprefix("OUTPUT_KIND_").lower(),
            "status": dist.OutputStatus.Name(s.status).removeprefix("OUTPUT_STATUS_").lower(),
            "url": s.url,
            "station": s.station,
            "kbps": f"{s.bitrate_kbps:.0f}",
            "reconnects": s.reconnects,
            "dropped": s.dropped_packets,
            "reason": s.reason,
        }
        for s in reply.outputs
    ]


async def _output(ctl: Ctl, args: argparse.Namespace) -> int:
    reply = await ctl.command(
        subject("prod", args.prod, "dist", "cmd"), build_command(args), dist.DistReply
    )
    print_table(
        rows(reply),
        ["id", "kind", "status", "station", "url", "kbps", "reconnects", "dropped", "reason"],
    )
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("output", help="add, remove, start, stop or list a production's outputs")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add an output (started unless --stopped)")
    add.add_argument("id")
    add.add_argument("--kind", choices=sorted(KINDS), required=True)
    add.add_argument("--url", help="rtmp(s)://host/app or srt://host:port")
    add.add_argument("--stream-key-file", help=f"file with the stream key (else ${STREAM_KEY_ENV})")
    add.add_argument(
        "--passphrase-file", help=f"file with the SRT passphrase (else ${PASSPHRASE_ENV})"
    )
    add.add_argument("--format", choices=sorted(FORMATS), default="ts", help="recording format")
    add.add_argument("--segment-seconds", type=int, default=0, help="recording file length")
    add.add_argument("--label", default="")
    add.add_argument(
        "--ladder",
        type=lambda text: [int(h) for h in text.split(",") if h.strip()],
        default=[],
        help="HLS: extra renditions by height, e.g. 720,360",
    )
    add.add_argument(
        "--station",
        default="",
        help="SRT: a return to this station (the picture with its mix-minus); its own "
        "passphrase unless one is given",
    )
    add.add_argument(
        "--listen",
        action="store_true",
        help="SRT: listen on the url's host:port for the receiver to call (default: call it)",
    )
    add.add_argument(
        "--picture", choices=("program", "clean"), default="", help="a return's picture"
    )
    add.add_argument("--stopped", action="store_true", help="add without starting")
    for name in ("remove", "start", "stop"):
        actions.add_parser(name, help=f"{name} an output").add_argument("id")
    actions.add_parser("list", help="list outputs with their state")
    for sub in actions.choices.values():
        sub.add_argument("--prod", required=True, help="production id")
        sub.set_defaults(run=lambda args: run_verb(args, _output))
    exchange_ctl.register(verbs)
