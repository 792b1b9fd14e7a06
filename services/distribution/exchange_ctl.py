"""`baycast ctl cue | return | exchange`: cues to stations, a station's return URL, the viewers.

    baycast ctl cue <prod> <station>[,<station>] "30 秒后上场 / 30 s to air" [--in 30s] [--wait 20]
    baycast ctl cue <prod> --all "全体注意 / all stations stand by" [--at 14:00:00 [--tz ...]]
    baycast ctl cue list <prod>
    baycast ctl cue clear <prod> <id>
    baycast ctl return url <prod> <station>
    baycast ctl exchange viewers <prod>

`--wait S` follows `prod.<prod>.cue` and prints each acknowledgement as it comes; it exits 4 when
some station has not acknowledged within S seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import re
import sys
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.common import errors
from services.common.bus import decode, subject
from services.common.ctl import Ctl, print_table, run_verb
from services.common.gen.baycast.v1 import exchange_pb2

DEFAULT_TZ = "Asia/Shanghai"
EXIT_NOT_ACKNOWLEDGED = 4
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")

Cmd = exchange_pb2.ExchangeCommand


def parse_duration(text: str) -> float:
    """`30s`, `90`, `2m`, `1m30s`, `1h` -> seconds."""
    match = _DURATION.match(text.strip())
    if not text.strip() or match is None or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 30s, 2m or 1m30s")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def countdown_us(
    in_s: float | None, at: str | None, tz: str, now: dt.datetime | None = None
) -> int:
    """Unix µs of the countdown's end: `in_s` from now, or today's `at` (HH:MM[:SS]) in `tz`."""
    now = now or dt.datetime.now(dt.UTC)
    if in_s is not None:
        return int((now.timestamp() + in_s) * 1_000_000)
    if at is None:
        return 0
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise errors.InvalidArgument(f"unknown time zone {tz!r}", field="tz") from None
    try:
        clock = dt.time.fromisoformat(at)
    except ValueError:
        raise errors.InvalidArgument(f"{at!r} is not HH:MM:SS", field="at") from None
    local_today = now.astimezone(zone).date()
    when = dt.datetime.combine(local_today, clock, tzinfo=zone)
    return int(when.timestamp() * 1_000_000)


def _words(args: argparse.Namespace) -> list[str]:
    return [args.first, *args.rest]


def build_cue(args: argparse.Namespace) -> Cmd:
    """The SendCue of `cue <prod> <stations>|--all <text>`."""
    words = _words(args)
    if args.all:
        if len(words) != 2:
            raise errors.InvalidArgument("usage: cue <prod> --all <text>", field="stations")
        prod, text = words
        stations: list[str] = []
    else:
        if len(words) != 3:
            raise errors.InvalidArgument(
                "usage: cue <prod> <station>[,<station>...] <text>", field="stations"
            )
        prod, names, text = words
        stations = [s.strip() for s in names.split(",") if s.strip()]
    if args.in_ is not None and args.at is not None:
        raise errors.InvalidArgument("give --in or --at, not both", field="at")
    args.prod = prod
    return Cmd(
        cue=Cmd.SendCue(
            stations=stations,
            all=args.all,
            text=text,
            countdown_to_us=countdown_us(args.in_, args.at, args.tz),
        )
    )


def _local(us: int, tz: str) -> str:
    if not us:
        return ""
    try:
        zone: dt.tzinfo = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        zone = dt.UTC
    return dt.datetime.fromtimestamp(us / 1_000_000, zone).strftime("%H:%M:%S")


def cue_rows(cues: list[exchange_pb2.Cue], tz: str) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "station": c.station,
            "text": c.text,
            "countdown": _local(c.countdown_to_us, tz),
            "sent": _local(c.sent_at_us, tz),
            "by": c.sent_by,
            "acknowledged": (
                f"{_local(c.acknowledged_at_us, tz)} ({c.acknowledged_by})"
                if c.acknowledged_at_us
                else ""
            ),
        }
        for c in cues
    ]


CUE_COLUMNS = ["id", "station", "text", "countdown", "sent", "by", "acknowledged"]


async def _command(ctl: Ctl, prod: str, command: Cmd) -> exchange_pb2.ExchangeReply:
    return await ctl.command(
        subject("prod", prod, "exchange", "cmd"), command, exchange_pb2.ExchangeReply
    )


async def _cue(ctl: Ctl, args: argparse.Namespace) -> int:
    words = _words(args)
    if words and words[0] == "list" and len(words) == 2 and not args.all:
        reply = await _command(ctl, words[1], Cmd(cues=Cmd.ListCues()))
        print_table(cue_rows(list(reply.cues), args.tz), CUE_COLUMNS)
        return 0
    if words and words[0] == "clear" and len(words) == 3 and not args.all:
        reply = await _command(ctl, words[1], Cmd(clear=Cmd.ClearCue(id=words[2])))
        print_table(cue_rows(list(reply.cues), args.tz), CUE_COLUMNS)
        return 0
    command = build_cue(args)
    acks: asyncio.Queue[exchange_pb2.Cue] = asyncio.Queue()
    if args.wait is not None:
        # Listening before sending: a quick station's acknowledgement cannot slip past.
        async def on_cue(msg: Any) -> None:
            with contextlib.suppress(errors.InvalidArgument):
                acks.put_nowait(decode(msg.data, exchange_pb2.Cue))

        await ctl.bus.nc.subscribe(subject("prod", args.prod, "cue"), cb=on_cue)
        await ctl.bus.nc.flush()
    reply = await _command(ctl, args.prod, command)
    for cue in reply.cues:
        print(f"{cue.id}\t{cue.station}")
    if args.wait is None:
        return 0
    sys.stdout.flush()
    waiting = {cue.id: cue.station for cue in reply.cues}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.wait
    while waiting:
        try:
            cue = await asyncio.wait_for(acks.get(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            break
        if cue.id in waiting and cue.acknowledged_at_us:
            del waiting[cue.id]
            print(
                f"acknowledged {cue.id} by {cue.station} ({cue.acknowledged_by}) at "
                f"{_local(cue.acknowledged_at_us, args.tz)}"
            )
    if waiting:
        for cue_id, station in waiting.items():
            print(f"not acknowledged within {args.wait:g} s: {cue_id} ({station})", file=sys.stderr)
        return EXIT_NOT_ACKNOWLEDGED
    return 0


async def _return_url(ctl: Ctl, args: argparse.Namespace) -> int:
    command = Cmd(feeds=Cmd.Feeds(station=args.station))
    reply = await _command(ctl, args.prod, command)
    handle = f"return/{args.station}"
    found = [f for f in reply.feeds.feeds if f.handle == handle]
    if not found:
        raise errors.NotFound(
            f"station {args.station} is not a source of production {args.prod}: it has no return"
        )
    print(f"return  {found[0].whep_url}")
    print(f"events  {reply.feeds.events_url}")
    return 0


async def _viewers(ctl: Ctl, args: argparse.Namespace) -> int:
    reply = await _command(ctl, args.prod, Cmd(viewers=Cmd.ListViewers()))
    print_table(
        [
            {
                "id": v.id,
                "handle": v.handle,
                "principal": v.principal,
                "state": v.state,
                "since": _local(v.since_us, args.tz),
                "kbps": f"{v.bitrate_kbps:.0f}",
                "loss": f"{v.loss_fraction:.1%}",
                "rtt_ms": f"{v.rtt_ms:.0f}",
                "rendition": v.rendition,
            }
            for v in reply.viewers
        ],
        ["id", "handle", "principal", "state", "since", "kbps", "loss", "rtt_ms", "rendition"],
    )
    return 0


def register(verbs: argparse._SubParsersAction) -> None:
    cue = verbs.add_parser(
        "cue",
        help="send a cue to stations; `cue list <prod>`, `cue clear <prod> <id>`",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Two positionals, the second taking one or more: `cue qh --all "text"` then parses, which
    # one positional of "*" would not (argparse fills it, empty, before it meets --all).
    cue.add_argument("first", metavar="PROD|list|clear")
    cue.add_argument(
        "rest",
        nargs="+",
        metavar="ARG",
        help="STATIONS TEXT, or TEXT with --all; the production for list; PROD ID for clear",
    )
    cue.add_argument("--all", action="store_true", help="every station of the production")
    cue.add_argument(
        "--in",
        dest="in_",
        type=parse_duration,
        metavar="DURATION",
        help="countdown: 30s, 2m, 1m30s",
    )
    cue.add_argument("--at", metavar="HH:MM:SS", help="countdown to HH:MM:SS today")
    cue.add_argument("--tz", default=DEFAULT_TZ, help=f"time zone of --at (default {DEFAULT_TZ})")
    cue.add_argument(
        "--wait", type=float, metavar="S", help="wait S seconds for the acknowledgements"
    )
    cue.set_defaults(run=lambda args: run_verb(args, _cue))

    ret = verbs.add_parser("return", help="a station's return feed")
    rv = ret.add_subparsers(dest="return_verb", required=True, metavar="VERB")
    url = rv.add_parser("url", help="the station's return WHEP URL and event stream URL")
    url.add_argument("prod")
    url.add_argument("station")
    url.set_defaults(run=lambda args: run_verb(args, _return_url))

    exchange = verbs.add_parser("exchange", help="the exchange: who watches what")
    ev = exchange.add_subparsers(dest="exchange_verb", required=True, metavar="VERB")
    viewers = ev.add_parser("viewers", help="WHEP viewers of a production")
    viewers.add_argument("prod")
    viewers.add_argument("--tz", default=DEFAULT_TZ)
    viewers.set_defaults(run=lambda args: run_verb(args, _viewers))
