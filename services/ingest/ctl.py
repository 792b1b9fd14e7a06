"""`baycast ctl station ...` and `baycast ctl source ...`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from services.common.bus import PREFIX
from services.common.ctl import Ctl, print_message, print_table, run_verb, to_dict
from services.common.gen.baycast.v1 import control_pb2, ingest_pb2
from services.ingest.service import STATION_COMMANDS
from services.ingest.sources import SOURCES_BUCKET

STATS_WAIT_S = 1.5


async def _station(ctl: Ctl, args: argparse.Namespace) -> int:
    verb = args.station_verb
    if verb == "add":
        command = ingest_pb2.StationCommand(add=ingest_pb2.AddStation(id=args.id, name=args.name))
    elif verb == "list":
        command = ingest_pb2.StationCommand(list=ingest_pb2.ListStations())
    elif verb == "set":
        change = ingest_pb2.SetStation(id=args.id)
        if args.name is not None:
            change.name = args.name
        if args.tally is not None:
            change.tally_url = args.tally
        command = ingest_pb2.StationCommand(set=change)
    else:
        command = ingest_pb2.StationCommand()
        getattr(command, verb).CopyFrom(ingest_pb2.StationRef(id=args.id))
    reply = await ctl.command(STATION_COMMANDS, command, ingest_pb2.StationReply)
    if verb == "list":
        rows = [
            {
                "id": s.id,
                "name": s.name,
                "revoked": "yes" if s.revoked else "",
                "created": time.strftime("%Y-%m-%d %H:%M", time.gmtime(s.created_at_us / 1e6)),
                "whip_url": s.whip_url,
                "tally": s.tally_url,
            }
            for s in reply.stations
        ]
        print_table(rows, ["id", "name", "revoked", "created", "whip_url", "tally"])
        return 0
    station = reply.stations[0]
    if reply.token:
        print(f"station   {station.id} ({station.name})")
        print(f"WHIP URL  {station.whip_url}")
        print(f"token     {reply.token}")
        print(f"page      {station.page_url}#token={reply.token}")
        print("The token is shown only now; the server keeps only its hash. The page link")
        print("carries it after '#', which browsers never send to a server.")
    else:
        print_message(station)
    return 0


async def _collect_stats(ctl: Ctl, wait_s: float) -> dict[str, control_pb2.SourceStats]:
    seen: dict[str, control_pb2.SourceStats] = {}

    async def on_stats(stats: control_pb2.SourceStats, _subject: str) -> None:
        seen[stats.source] = stats

    sub = await ctl.bus.subscribe(PREFIX + "source.*.stats", control_pb2.SourceStats, on_stats)
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    return seen


async def _source(ctl: Ctl, args: argparse.Namespace) -> int:
    bucket = await ctl.bus.kv(SOURCES_BUCKET, control_pb2.SourceState)
    states = await bucket.items()
    stats = await _collect_stats(ctl, args.wait)
    if args.source_verb == "show":
        state = states.get(args.id)
        if state is None:
            print(f"error: NOT_FOUND: no source {args.id!r}", file=sys.stderr)
            return 2
        detail: dict[str, Any] = {"state": to_dict(state)}
        if args.id in stats:
            detail["stats"] = to_dict(stats[args.id])
        print(json.dumps(detail, ensure_ascii=False, indent=2))
        return 0
    rows = []
    for source_id, state in sorted(states.items()):
        if not state.online and not args.all:
            continue
        st = stats.get(source_id, control_pb2.SourceStats())
        flags = [f for f in ("black", "frozen", "silent") if getattr(st, f)]
        rows.append(
            {
                "source": source_id,
                "name": state.name,
                "online": "yes" if state.online else "no",
                "protocol": state.protocol,
                "format": f"{state.video.width}x{state.video.height} {state.video.codec}"
                f"/{state.audio.codec}",
                "fps": f"{st.fps:.1f}",
                "kbps": f"{st.bitrate_kbps:.0f}",
                "loss": f"{st.loss_fraction * 100:.1f}%",
                "rtt": f"{st.rtt_ms:.0f}ms",
                "audio": f"{st.audio_level_dbfs:.0f}dBFS",
                "flags": ",".join(flags),
            }
        )
    print_table(
        rows,
        [
            "source",
            "name",
            "online",
            "protocol",
            "format",
            "fps",
            "kbps",
            "loss",
            "rtt",
            "audio",
            "flags",
        ],
    )
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    station = verbs.add_parser("station", help="stations allowed to contribute (ingest)")
    sv = station.add_subparsers(dest="station_verb", required=True, metavar="VERB")
    add = sv.add_parser("add", help="create a station; prints its WHIP URL and token once")
    add.add_argument("id", help="station id: a-z, 0-9, '-' (e.g. gz)")
    add.add_argument("--name", default="", help="display name, e.g. 广州台")
    sv.add_parser("list", help="every station")
    for verb, text in (
        ("show", "one station"),
        ("revoke", "the token stops working and a live session ends"),
        ("rotate", "a new token (printed once); the old one stops working"),
    ):
        sv.add_parser(verb, help=text).add_argument("id")
    set_ = sv.add_parser("set", help="change a station's name or tally address")
    set_.add_argument("id")
    set_.add_argument("--name", default=None, help="new display name")
    set_.add_argument(
        "--tally",
        default=None,
        metavar="URL",
        help="TSL UMD v5 tally: tsl5+udp://host:port or tsl5+tcp://host:port[?index=N]; '' removes",
    )
    station.set_defaults(run=lambda args: run_verb(args, _station))

    source = verbs.add_parser("source", help="live sources (ingest)")
    so = source.add_subparsers(dest="source_verb", required=True, metavar="VERB")
    ls = so.add_parser("list", help="live sources with their latest statistics")
    ls.add_argument("--all", action="store_true", help="include offline sources")
    show = so.add_parser("show", help="one source's state and statistics")
    show.add_argument("id")
    for p in (ls, show):
        p.add_argument("--wait", type=float, default=STATS_WAIT_S, help="seconds to gather stats")
    source.set_defaults(run=lambda args: run_verb(args, _source))
