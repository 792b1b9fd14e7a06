"""`baycast station`: publish a test card or a media file to ingest over WHIP, and follow the
station's tally, talkback and cues from the exchange (Enter acknowledges the newest cue)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import structlog
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamTrack

from services.common import ice
from services.common.telemetry import configure_logging
from services.common.tls import http_connector
from services.station.events import (
    RETRY_MAX_S,
    RETRY_MIN_S,
    EnterKey,
    StationEventStream,
    StationFollower,
    StreamRefused,
    exchange_url_from_whip,
)
from services.station.publisher import PublishRefused, WhipPublisher
from services.station.testcard import TestCard
from services.station.tracks import CardLoop, CardVideoTrack, ToneAudioTrack

DEFAULT_FPS = 25
DEFAULT_SIZE = "1280x720"
CONFIG_TIMEOUT_S = 10.0
STOP_EVENTS_S = 5.0

log = structlog.get_logger("station")


def station_id_from_url(url: str) -> str:
    return urlparse(url).path.rstrip("/").rpartition("/")[2]


def track_factory(args: argparse.Namespace) -> tuple[Callable[[], list[MediaStreamTrack]], bool]:
    """A function making fresh tracks for each (re)connection, and whether H.264 is required."""
    if args.source != "testcard":
        if not os.path.exists(args.source):
            raise SystemExit(f"error: no such file {args.source!r}")

        def from_file() -> list[MediaStreamTrack]:
            player = MediaPlayer(args.source, loop=True)
            return [t for t in (player.video, player.audio) if t is not None]

        return from_file, False
    width, _, height = args.size.partition("x")
    station = args.station or station_id_from_url(args.whip)
    card = TestCard(station, args.name or station, int(width), int(height))
    if args.mode == "packets":
        return CardLoop.encode(card, args.fps).tracks, True
    frames = [0]

    def live() -> list[MediaStreamTrack]:
        video = CardVideoTrack(card, args.fps, first_frame=frames[0])
        frames[0] += 1_000_000  # a reconnection is visible in the counter's leading digit
        return [video, ToneAudioTrack(card)]

    return live, False


async def find_exchange(args: argparse.Namespace, stop: asyncio.Event) -> str:
    """`--exchange`, else what ingest's station config says; "" when it cannot be known.

    Ingest being unreachable is retried (the publisher retries too); a definite refusal (an
    unknown station, an ingest without station configs) turns events off unless `--events`
    asked for them."""
    if args.exchange:
        return str(args.exchange).rstrip("/")
    delay = RETRY_MIN_S
    timeout = aiohttp.ClientTimeout(total=CONFIG_TIMEOUT_S)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=http_connector(args.ca_file)
    ) as http:
        while not stop.is_set():
            try:
                return await exchange_url_from_whip(http, args.whip)
            except StreamRefused as exc:
                if not args.events:
                    log.warning("events_off", reason=f"station config answered {exc.status}")
                    return ""
                log.warning("station_config_refused", status=exc.status, reason=exc.reason)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.warning("station_config_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RETRY_MAX_S)
    return ""


async def follow_events(args: argparse.Namespace, token: str, stop: asyncio.Event) -> None:
    """Log the station's tally, talkback and cues until `stop`; Enter acknowledges a cue."""
    exchange = await find_exchange(args, stop)
    if not exchange:
        return
    station = station_id_from_url(args.whip)
    loop = asyncio.get_running_loop()
    acks: set[asyncio.Task[object]] = set()
    # Events on by default: an exchange that turns out not to be there turns them off.
    absent_is_final = args.events is None
    async with StationEventStream(
        exchange, station, token, absent_is_final=absent_is_final, ca_file=args.ca_file
    ) as stream:
        follower = StationFollower(stream)

        def on_enter() -> None:
            task = loop.create_task(follower.acknowledge_newest())
            acks.add(task)
            task.add_done_callback(acks.discard)

        keys = EnterKey(sys.stdin, on_enter)
        log.info("following_events", exchange=exchange, station=station)
        try:
            await follower.run(stop)
        except StreamRefused as exc:
            if exc.status == 404:
                log.warning("events_off", reason=f"no event stream at {exchange}")
            else:
                log.error("event_stream_refused", status=exc.status, reason=exc.reason)
        finally:
            keys.close()
            if acks:
                await asyncio.wait(acks, timeout=STOP_EVENTS_S)


def station_token(args: argparse.Namespace) -> str:
    """The bearer token: from --token-file, else --token, else $BAYCAST_STATION_TOKEN."""
    if args.token_file:
        return Path(args.token_file).read_text().strip()
    return str(args.token or os.environ.get("BAYCAST_STATION_TOKEN", ""))


async def _publish(args: argparse.Namespace) -> int:
    ice.configure(tuple(args.ice_host))
    try:
        token = station_token(args)
    except OSError as exc:
        print(f"error: cannot read {args.token_file}: {exc.strerror}", file=sys.stderr)
        return 2
    if not token:
        print("error: give --token-file or set BAYCAST_STATION_TOKEN (or --token)", file=sys.stderr)
        return 2
    make_tracks, h264_only = track_factory(args)
    publisher = WhipPublisher(
        args.whip, token, make_tracks, h264_only=h264_only, ca_file=args.ca_file
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    events = (
        asyncio.create_task(follow_events(args, token, stop)) if args.events is not False else None
    )
    try:
        await publisher.run(stop)
    except PublishRefused as exc:
        print(f"error: ingest refused the station: {exc}", file=sys.stderr)
        return 2
    finally:
        stop.set()
        if events is not None:
            try:
                await asyncio.wait_for(events, STOP_EVENTS_S)
            except TimeoutError:
                log.warning("events_stop_timeout")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("station", help="publish a test card or a file to ingest over WHIP")
    p.add_argument("--whip", required=True, help="WHIP URL, e.g. http://127.0.0.1:8101/whip/gz")
    p.add_argument(
        "--ca-file",
        default=os.environ.get("BAYCAST_TLS_CA_FILE", ""),
        help="a CA to trust for https:// besides the system's (e.g. .baycast/tls/ca.pem of a "
        "`baycast up --tls`; default $BAYCAST_TLS_CA_FILE)",
    )
    p.add_argument(
        "--token-file",
        default="",
        help="a file holding the bearer token (else --token, else $BAYCAST_STATION_TOKEN)",
    )
    p.add_argument(
        "--token",
        default="",
        help="bearer token; `ps` shows it to every user of the machine: "
        "prefer --token-file or $BAYCAST_STATION_TOKEN",
    )
    p.add_argument("--source", default="testcard", help="testcard, or a media file to loop")
    p.add_argument("--name", default="", help="name on the card, e.g. 广州台")
    p.add_argument("--station", default="", help="station id for the card (default: from URL)")
    p.add_argument("--size", default=DEFAULT_SIZE, help="card size WxH (default 1280x720)")
    p.add_argument("--fps", type=int, default=DEFAULT_FPS)
    p.add_argument(
        "--mode",
        choices=("live", "packets"),
        default="live",
        help="live: render and encode every frame; packets: encode a 2 s loop once, replay it",
    )
    p.add_argument(
        "--ice-host",
        action="append",
        default=[],
        help="local address for ICE (repeatable; default 127.0.0.1)",
    )
    p.add_argument(
        "--events",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="follow the station's tally, talkback and cues (default: on when the exchange is "
        "known); Enter acknowledges the newest cue",
    )
    p.add_argument(
        "--exchange",
        default="",
        help="the exchange's base URL (default: from <ingest>/station/<id>/config.json)",
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    if not args.ice_host:
        args.ice_host = ["127.0.0.1"]
    configure_logging(os.environ.get("BAYCAST_LOG_FORMAT", "auto"), "info")
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_publish(args))
    return 0
