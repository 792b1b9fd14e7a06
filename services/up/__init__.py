"""`baycast up`: the whole platform on one machine, and the demo show 启航·大湾区."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
from pathlib import Path

import aiohttp

from services.common.bus import Bus
from services.common.handles import HandleDirectory
from services.common.tls import http_connector
from services.up import demo
from services.up.launcher import Console, Launcher, pick_port
from services.up.local_ca import make_local_tls
from services.up.web import ShowPage

DEFAULT_STATE_DIR = ".baycast"
WATCH_INTERVAL_S = 5.0
STATION_SIZE = (640, 360)


def service_env(args: argparse.Namespace, data_dir: str) -> dict[str, dict[str, str]]:
    ingest = {
        # Loopback candidates only, unless the platform is opened to a network.
        "BAYCAST_INGEST_ICE_HOSTS": args.listen if args.listen != "0.0.0.0" else "",
    }
    if args.listen == "127.0.0.1":
        ingest["BAYCAST_INGEST_ICE_HOSTS"] = "127.0.0.1"
    if args.public_ip:
        ingest["BAYCAST_INGEST_PUBLIC_IP"] = args.public_ip
    return {
        "ingest": ingest,
        "distribution": {"BAYCAST_DISTRIBUTION_DATA_DIR": data_dir},
        # File bindings read only inside this folder (docs/adr/0017).
        "graphics": {
            "BAYCAST_GRAPHICS_BINDING_DATA_DIR": str(Path(data_dir) / "graphics-data"),
        },
    }


async def _watch(
    launcher: Launcher, console: Console, services: dict[str, dict[str, str]], stop: asyncio.Event
) -> None:
    """Say so when the box cannot keep up or a child died.

    Two signs: the mixer skipped program frames, or ingest dropped contribution frames because a
    service read them too slowly (when it is the mixer, the boxes on air hold, and fall to the
    slate past the hold time).
    """
    checks = (
        ("mixer", demo.skipped_ticks, "the program skipped {n:.0f} frames"),
        ("ingest", demo.contribution_drops, "ingest dropped {n:.0f} contribution frames"),
    )
    last: dict[str, float] = {}
    async with aiohttp.ClientSession(connector=http_connector(launcher.ca_file)) as http:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), WATCH_INTERVAL_S)
            crashed = launcher.crashed()
            if crashed:
                console.say(f"{', '.join(crashed)} exited: stopping")
                stop.set()
                return
            for name, read, what in checks:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{services[name]['http']}/metrics") as resp:
                        count = read(await resp.text())
                    if name in last and count > last[name]:
                        console.say(
                            f"WARNING: this machine cannot keep up: "
                            f"{what.format(n=count - last[name])} in the last "
                            f"{WATCH_INTERVAL_S:.0f} s (try --format 720p or fewer --stations)"
                        )
                    last[name] = count


async def _demo(
    args: argparse.Namespace, launcher: Launcher, console: Console, bus: Bus
) -> ShowPage:
    services = launcher.endpoints()["services"]
    assert isinstance(services, dict)
    plan = demo.stations(args.stations)
    console.say(f"registering {len(plan)} stations…")
    creds = await demo.register_stations(bus, plan, services["ingest"]["http"])
    station_plan = {"stations": creds, "size": list(STATION_SIZE), "fps": 25}
    await launcher.start_module(
        "stations", "services.up.stations", json.dumps(station_plan).encode()
    )
    console.say("adding the title film to the media library…")
    await demo.add_opener(bus, Path(args.state_dir), args.format)
    console.say(f"creating the production {demo.TITLE} ({args.format})…")
    await demo.create_production(bus, demo.production(plan, args.format))
    console.say("adding outputs: HLS and a recording…")
    await demo.add_outputs(bus)
    console.say("keying graphics and starting the rundown…")
    await demo.show_standing_graphics(bus)
    await demo.start_rundown(bus, plan)
    console.say(f"adding the director ({demo.DIRECTOR_NAME}) to the control room…")
    operator_id, operator_token = await demo.add_director(bus)
    page = ShowPage(
        HandleDirectory(bus),
        demo.PRODUCTION,
        demo.TITLE,
        {name: s["http"] for name, s in services.items()},
        launcher.internal_tls,
    )
    port = pick_port(args.listen, args.web_port)
    await page.start(args.listen, port)
    web = f"{'https' if launcher.tls else 'http'}://{launcher.host()}:{port}"
    dist = services["distribution"]["http"]
    control = services["control"]["http"]
    console.say("")
    console.say(f"  show page      {web}")
    console.say(f"  control room   {control}/login#token={operator_token}")
    console.say(f"                 ({demo.DIRECTOR_NAME}; API document {control}/api/openapi.json)")
    console.say(f"  HLS            {dist}/hls/{demo.PRODUCTION}/index.m3u8")
    console.say(f"  status         {services['monitoring']['http']}/status")
    ingest = services["ingest"]["http"]
    for station in (creds[0], creds[-2]):
        label = f"station {station['id']}"
        console.say(f"  {label:<14} {ingest}/station/{station['id']}#token={station['token']}")
    console.say("                 (contribute, the station's return, tally, cues; every station's")
    console.say(f"                 link is in {Path(args.state_dir, 'endpoints.json')})")
    console.say(f"  recordings     {Path(args.state_dir, 'data', 'recordings', demo.PRODUCTION)}")
    if launcher.tls is not None:
        console.say(f"  TLS CA         {launcher.tls.ca_file.resolve()}")
        console.say("                 (trust it on a phone or in a browser to open these pages;")
        console.say("                 `baycast station --ca-file` and `baycast ctl` use it)")
    console.say("")
    console.say("  try, in another terminal:")
    console.say(f"    baycast ctl rundown status {demo.PRODUCTION}")
    console.say(f"    baycast ctl cut {demo.PRODUCTION} sz")
    console.say(f"    baycast ctl layout {demo.PRODUCTION} wall")
    console.say(f"    baycast ctl snapshot {demo.PRODUCTION} multiview -o multiview.png")
    console.say(f"    baycast ctl tbar {demo.PRODUCTION} 0.5")
    console.say("    baycast ctl alerts")
    console.say(f"    baycast ctl return url {demo.PRODUCTION} gz")
    console.say(
        f'    baycast ctl cue {demo.PRODUCTION} gz "30 秒后上场 / 30 s to air" --in 30s --wait 60'
    )
    console.say(f"    baycast ctl talk {demo.PRODUCTION} --to gz --tone 1000 --seconds 5")
    console.say("    baycast ctl operator add zhang --name 张导 --role director")
    console.say("  Ctrl-C stops everything.")
    # The director's token sits next to the admin's NATS password, readable by us only.
    pages = {c["id"]: f"{ingest}/station/{c['id']}#token={c['token']}" for c in creds}
    launcher.write_endpoints(
        {
            "operator_id": operator_id,
            "operator_token": operator_token,
            "web": web,
            "station_pages": pages,
        }
    )
    return page


async def _up(args: argparse.Namespace) -> int:
    console = Console()
    state_dir = Path(args.state_dir)
    tls = None
    if args.tls:
        hosts = [h for h in (args.listen, args.public_ip) if h and h != "0.0.0.0"]
        tls = make_local_tls(state_dir / "tls", hosts)
    launcher = Launcher(state_dir, args.listen, console, tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    code = 0
    bus: Bus | None = None
    page: ShowPage | None = None
    try:
        await launcher.start_nats(args.nats)
        data_dir = str((state_dir / "data").resolve())
        await launcher.start_services(service_env(args, data_dir))
        path = launcher.write_endpoints({})
        console.say(f"platform ready; endpoints in {path}")
        internal = launcher.internal_tls
        bus = Bus(
            launcher.nats_url_for("admin"),
            "baycast-up",
            tls=internal.nats_context() if internal else None,
        )
        await bus.connect()
        if not args.no_demo:
            page = await _demo(args, launcher, console, bus)
        services = launcher.endpoints()["services"]
        assert isinstance(services, dict)
        watcher = asyncio.create_task(_watch(launcher, console, services, stop))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=args.duration or None)
        stop.set()
        await watcher
        if launcher.crashed():
            code = 1
    except RuntimeError as exc:
        console.say(f"error: {exc}")
        code = 1
    finally:
        console.say("stopping…")
        if page is not None:
            await page.stop()
        if bus is not None:
            await bus.drain()
        await launcher.stop()
        console.say("stopped")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="run the platform and the demo show on this machine")
    p.add_argument("--nats", help="use this NATS server instead of starting one")
    p.add_argument(
        "--listen", default="127.0.0.1", help="address everything binds (default loopback)"
    )
    p.add_argument("--public-ip", default="", help="address announced to WebRTC peers on a network")
    p.add_argument(
        "--stations", type=int, default=10, help="city stations, 1-10 (plus two reporters)"
    )
    p.add_argument("--format", choices=sorted(demo.FORMATS), default="720p", help="program format")
    p.add_argument("--duration", type=float, default=0, help="stop after this many seconds")
    p.add_argument("--web-port", type=int, default=8080, help="show page port (default 8080)")
    p.add_argument("--no-demo", action="store_true", help="only the platform, no demo show")
    p.add_argument(
        "--tls",
        action="store_true",
        help="HTTPS edges, NATS over TLS and mutual gRPC, with a local CA made under "
        "<state-dir>/tls (so a phone on the LAN can open the station page)",
    )
    p.add_argument(
        "--state-dir", default=DEFAULT_STATE_DIR, help="NATS store, media output, endpoints"
    )
    p.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    Path(args.state_dir).mkdir(parents=True, exist_ok=True)
    return asyncio.run(_up(args))
