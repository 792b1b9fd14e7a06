"""`baycast up`: the whole platform on one machine (and the demo show 启航·大湾区)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from services.up.launcher import Console, Launcher

DEFAULT_STATE_DIR = ".baycast"


async def _up(args: argparse.Namespace) -> int:
    console = Console()
    state_dir = Path(args.state_dir)
    launcher = Launcher(state_dir, args.listen, console)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    try:
        await launcher.start_nats(args.nats)
        data_dir = str((state_dir / "data").resolve())
        await launcher.start_services({"distribution": {"BAYCAST_DISTRIBUTION_DATA_DIR": data_dir}})
        path = launcher.write_endpoints({})
        console.say(f"platform ready; endpoints in {path}")
        console.say("try: baycast ctl status")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration or None)
        crashed = launcher.crashed()
        if crashed:
            console.say(f"stopped early: {', '.join(crashed)} exited")
            code = 1
    except RuntimeError as exc:
        console.say(f"error: {exc}")
        code = 1
    finally:
        console.say("stopping…")
        await launcher.stop()
        console.say("stopped")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the platform and the demo show on this machine")
    p.add_argument("--nats", help="use this NATS server instead of starting one")
    p.add_argument(
        "--listen", default="127.0.0.1", help="address the services bind (default loopback)"
    )
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    p.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="NATS store, media output, endpoints"
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_up(args))
