"""Two shows on the multi-host cluster while one replica of each service after another is
SIGKILLed (tests/cluster/harness.py: hosts in network namespaces on a bridge, no shared
/dev/shm, a three-server NATS JetStream cluster, two replicas of every service).

The shows are the demo's in small (tests/cluster/show.py): two stations, one to each ingest
replica, two 720p shows each on air from one and backed up by the other, one with the LIVE badge,
each pushing over RTMP to nginx-rtmp on the bridge. Before the kills, the traffic of every host and
the messages NATS carries are measured (docs/SCALING.md). Then ingest, mixer, graphics,
distribution, monitoring and control each lose the replica that carries the work, in turn, and the
test asserts what an audience and an operator would see: the outputs' pictures never black and
never more than 0.5 s apart within a push (the target: 1 s); exactly one publisher per output at
every sample of nginx- rtmp's stat page, back within 5 s; the badge on air again within 5 s; every
alert raised once until it clears; every service answering.

Run alone with `make test-cluster` (make test runs it with the rest)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
import av
import numpy as np
import pytest

from services.common import errors
from services.common.bus import PREFIX, Bus, decode
from services.common.gen.baycast.v1 import media_pb2, monitoring_pb2
from services.common.handles import HandleDirectory
from services.common.media import proto_to_i420
from services.common.rpc import ChannelCache
from services.common.video_link import link_kbps
from tests.cluster.harness import Cluster
from tests.cluster.show import SHOWS, STATIONS, Cmd, Show
from tests.support.rtmp import RtmpServer

pytestmark = pytest.mark.cluster

WATCH = (640, 360)  # the size the test watches show A's program at
KILL_ORDER = ("ingest", "mixer", "graphics", "distribution", "monitoring", "control")
# The LIVE badge's red box (live_badge.yaml: x 1624-1824, y 54-110 of 1080p), left of its text.
BADGE_AT = (1634 / 1920, 82 / 1080)
MEASURE_S = 10.0
HANDOVER_S = 5.0  # the bound for every unit's new owner
# Distribution's navy "program will resume" slate has a mean Y of 30; the shows' pictures (the
# test cards, the mixer's own slate) are above 40.
DISTRIBUTION_SLATE_LUMA = 37.0
# An I420 720p25 stream: 276.5 Mbit/s; monitoring's 320x180 tile of the program: 17.3.
RAW_720P_MBPS = 1280 * 720 * 3 / 2 * 25 * 8 / 1e6
RAW_TILE_MBPS = 320 * 180 * 3 / 2 * 25 * 8 / 1e6
PCM_MBPS = 48_000 * 2 * 16 / 1e6  # the program's sound to one subscriber
# The mixer's H.264 link for a 720p program (ADR 0025).
LINK_720P_MBPS = link_kbps(media_pb2.Compression(codec=media_pb2.VIDEO_CODEC_H264), 1280, 720) / 1e3


def badge_at(width: int, height: int) -> tuple[int, int]:
    return round(BADGE_AT[0] * width), round(BADGE_AT[1] * height)


def badge_in(image: np.ndarray) -> bool:
    """Whether the badge's red (#D7141A: Y 84, V 213 in BT.601) is at its place in a packed I420
    image of the WATCH size."""
    width, height = WATCH
    x, y = badge_at(width, height)
    flat = image.reshape(-1)
    v_plane = flat[width * height * 5 // 4 :].reshape(height // 2, width // 2)
    return bool(image[y, x] < 130 and v_plane[y // 2, x // 2] > 180)


@dataclass
class ProgramWatch:
    """Show A's program as the mixer serves it, followed through its moves between hosts."""

    bus: Bus
    production: str
    seen: list[tuple[float, bool]] = field(default_factory=list)  # (arrival, badge keyed)

    async def run(self) -> None:
        directory = HandleDirectory(self.bus)
        channels = ChannelCache()
        rendition = media_pb2.Rendition(width=WATCH[0], height=WATCH[1], no_audio=True)
        try:
            frames = directory.frames(
                channels, f"prod/{self.production}/program", rendition, subscriber="show-test"
            )
            async for message in frames:
                if message.WhichOneof("body") == "video":
                    image = proto_to_i420(message.video)
                    self.seen.append((time.monotonic(), badge_in(image)))
        finally:
            await channels.close()

    def badge_gap(self, since: float) -> float:
        """The longest run of program pictures without the badge after `since`, in seconds
        (to the first picture with it again)."""
        longest, off_from = 0.0, None
        for at, keyed in self.seen:
            if at < since:
                continue
            if not keyed and off_from is None:
                off_from = at
            elif keyed and off_from is not None:
                longest, off_from = max(longest, at - off_from), None
        return longest if off_from is None else float("inf")


@dataclass
class Publishers:
    """nginx-rtmp's stat page read every 100 ms: how many clients publish each stream."""

    rtmp: RtmpServer
    keys: tuple[str, ...]
    samples: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event, limit: int = 6000) -> None:
        for _ in range(limit):  # bounded: ten minutes of samples at most
            for key in self.keys:
                count = await asyncio.to_thread(self.rtmp.publishers, key)
                self.samples.setdefault(key, []).append((time.monotonic(), count))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)
            if stop.is_set():
                return

    def now(self, key: str) -> int:
        return self.samples[key][-1][1] if self.samples.get(key) else 0

    def most(self, key: str) -> int:
        return max(n for _, n in self.samples[key])

    def longest_without(self, key: str) -> float:
        """The longest time nobody published `key`, between the first and last publisher."""
        longest, gone, seen = 0.0, None, False
        for at, n in self.samples[key]:
            seen = seen or n > 0
            if n == 0 and gone is None and seen:
                gone = at
            elif n > 0 and gone is not None:
                longest, gone = max(longest, at - gone), None
        return longest


@dataclass
class Recorded:
    frames: int
    darkest: float  # the lowest mean luma of a picture
    longest_gap_s: float  # between consecutive pictures' timestamps, from `since` on
    with_badge: int
    program_since: int  # pictures of the program from `since` on (not distribution's slate)
    badge_since: int  # of which with the badge


def decode_recording(path: Path, since: float) -> Recorded:
    """Every picture of one push, with what happened from `since` on (Unix time; nginx-rtmp
    names a recording after the second its publish began)."""
    began = int(path.stem.rsplit("-", 1)[1])
    frames, darkest, gap, badge, last = 0, 255.0, 0.0, 0, None
    program_since = badge_since = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            luma = float(frame.to_ndarray(format="gray").mean())
            frames += 1
            darkest = min(darkest, luma)
            after = frame.time is not None and began + frame.time >= since
            if frame.time is not None:
                if last is not None and began + last >= since:
                    gap = max(gap, frame.time - last)
                last = frame.time
            rgb = frame.to_ndarray(format="rgb24")
            x, y = badge_at(frame.width, frame.height)
            r, g, b = (int(c) for c in rgb[y, x])
            keyed = r > 160 and g < 90 and b < 90
            badge += keyed
            if after and luma > DISTRIBUTION_SLATE_LUMA:
                program_since += 1
                badge_since += keyed
    return Recorded(frames, darkest, gap, badge, program_since, badge_since)


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until `check()` holds (polled every 100 ms); fails after `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(errors.BaycastError, aiohttp.ClientError, TimeoutError):
            if await check():
                return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    async with Cluster(tmp_path) as running:
        yield running


async def is_recovered(
    show: Show,
    watch: ProgramWatch,
    publishers: Publishers,
    service: str,
    other: str,
    killed_at: float,
    recordings: int,
) -> bool:
    """Whether `service` has recovered from the kill of its replica that carried the work."""
    if service == "ingest":  # show B's source lost: its backup on air
        state = await show.mixer("show-b", Cmd(get=Cmd.Get()))
        return state.showing["sz"] == "backup:gz"
    if service == "mixer":  # show A run by the other mixer, its program flowing again
        state = await show.mixer("show-a", Cmd(get=Cmd.Get()))
        return state.instance == other and any(at > killed_at for at, _ in watch.seen)
    if service == "graphics":  # the scene run by the other replica, the badge keyed again
        owner = await show.owner("graphics", "show-a")
        back = any(keyed for at, keyed in watch.seen if at > killed_at)
        return owner == other and back and watch.seen[-1][1]
    if service == "distribution":  # a new publish of show A, one publisher for each show
        fresh = len(show.rtmp.recordings("show-a")) > recordings
        return fresh and all(publishers.now(k) == 1 for k in SHOWS)
    if service == "monitoring":
        return await show.owner("monitoring", "alerts") == other
    return await show.control_answers(other)


async def test_two_shows_go_on_while_each_service_loses_a_replica(
    cluster: Cluster, tmp_path: Path
) -> None:
    rtmp = RtmpServer(tmp_path / "rtmp", host=cluster.network.gateway).start()
    bus = await cluster.inspector_bus()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    alerts: list[monitoring_pb2.Alert] = []
    try:
        show = Show(cluster, bus, rtmp)
        # Idle: every service up, nothing to do.
        idle_from, idle_messages = time.monotonic(), await cluster.nats_messages()
        await asyncio.sleep(MEASURE_S / 2)
        idle_rate = (await cluster.nats_messages() - idle_messages) / (time.monotonic() - idle_from)

        async def on_alert(msg: object) -> None:
            alerts.append(decode(msg.data, monitoring_pb2.Alert))  # type: ignore[attr-defined]

        await bus.nc.subscribe(PREFIX + "alert.*", cb=on_alert)
        await show.start(tmp_path)
        publishers = Publishers(rtmp, tuple(SHOWS))
        tasks.append(asyncio.create_task(publishers.run(stop)))

        async def both_live() -> bool:
            states = [await show.mixer(p, Cmd(get=Cmd.Get())) for p in SHOWS]
            live = all(s.showing[SHOWS[s.production][0]] == "live" for s in states)
            return live and all(publishers.now(k) == 1 for k in SHOWS)

        await until(both_live, 60, "both shows live on air and pushing")

        # The traffic of a steady show: each host's bytes and the bus's messages.
        await asyncio.sleep(2.0)
        before, messages, started = (
            cluster.traffic(),
            await cluster.nats_messages(),
            time.monotonic(),
        )
        await asyncio.sleep(MEASURE_S)
        after, elapsed = cluster.traffic(), time.monotonic() - started
        show_rate = (await cluster.nats_messages() - messages) / elapsed
        sent = {
            name: (after[name][0] - before[name][0]) * 8 / elapsed / 1e6
            for name in after
            if name in before
        }
        per_show = (show_rate - idle_rate) / len(SHOWS)
        print(
            f"\nNATS: {idle_rate:.0f} msgs/s idle, {show_rate:.0f} with two shows: "
            f"{per_show:.0f} msgs/s a show\nsent (Mbit/s) over {elapsed:.1f} s: "
            + ", ".join(f"{name} {mbps:.2f}" for name, mbps in sorted(sent.items()))
        )
        # docs/SCALING.md's figures. Between hosts a source travels raw at each production's
        # size: gz is in both shows, so ingest-a sends it twice at 720p. Each mixer sends its
        # show's program to distribution as H.264 (ADR 0025; the test cards take little of the
        # link's 3.6 Mbit/s), monitoring's 320x180 tile raw, and the program's sound to both.
        assert per_show <= 60, per_show
        for ingest in ("ingest-a", "ingest-b"):
            assert 1.9 * RAW_720P_MBPS <= sent[ingest] <= 2.2 * RAW_720P_MBPS, sent
        mixers = sent["mixer-a"] + sent["mixer-b"]
        per_mixer = LINK_720P_MBPS + RAW_TILE_MBPS + 2 * PCM_MBPS
        assert 2 * RAW_TILE_MBPS <= mixers <= 1.1 * 2 * per_mixer, sent
        assert sent["distribution-a"] + sent["distribution-b"] <= 4.0, sent
        assert sent["stations"] <= 2.0, sent

        watch = ProgramWatch(bus, "show-a")
        tasks.append(asyncio.create_task(watch.run()))
        await until(
            lambda: asyncio.sleep(0, result=any(keyed for _, keyed in watch.seen[-5:])),
            20,
            "the badge on show A's program",
        )

        figures: dict[str, float] = {}
        pushing = {prod: await show.owner("distribution", prod) for prod in SHOWS}
        kills_from = time.time()
        for service in KILL_ORDER:
            if service == "ingest":
                victim = STATIONS["sz"][1]  # show B's source: B falls back to gz
            elif service == "monitoring":
                victim = await show.owner("monitoring", "alerts")
            elif service == "control":
                await until(partial(show.control_answers, "control-a"), 10, "control-a answering")
                victim = "control-a"
            else:
                victim = await show.owner(service, "show-a")
            assert victim in cluster.processes, (service, victim)
            recordings = len(rtmp.recordings("show-a"))
            killed_at = time.monotonic()
            cluster.kill(victim)
            other = next(n for n in cluster.replica_names(service) if n != victim)

            recovered = partial(
                is_recovered, show, watch, publishers, service, other, killed_at, recordings
            )
            figures[service] = await until(recovered, 20, f"{service} after {victim} was killed")
            await cluster.restart(victim)
            await asyncio.sleep(1.0)
        figures["badge_gap"] = watch.badge_gap(0.0)
        for key in SHOWS:
            figures[f"{key}_without_publisher"] = publishers.longest_without(key)
        stop.set()
        print(
            "recovered after the kill (s): "
            + ", ".join(f"{name} {seconds:.2f}" for name, seconds in figures.items())
        )

        # Exactly one publisher per output at every sample; back within 5 s. Each bound is the
        # issue's 5 s, or near what the mechanism gives (docs/RELIABILITY.md row 15).
        for key in SHOWS:
            assert publishers.most(key) == 1, key
            assert figures[f"{key}_without_publisher"] <= HANDOVER_S, key
        assert figures["distribution"] <= HANDOVER_S
        assert figures["mixer"] <= HANDOVER_S
        # Leases of 2 s renewed every 0.5 s: taken within 2.5 s, plus the polls.
        assert figures["graphics"] <= 3.5 and figures["monitoring"] <= 3.5
        assert figures["badge_gap"] <= 0.5  # the mixer keeps the last layer meanwhile
        # backup_after_ms (1 s) after the loss: 0.85-1.06 s, once 4.3-5.3 s (docs/RELIABILITY.md)
        assert figures["ingest"] <= 6.0
        assert figures["control"] <= 0.5  # stateless: the other one answers at once

        # What the audience got: each push decoded, never black, no gap over 1 s within a push.
        # The pushes end first, so that decoding them does not take the CPU from them.
        for prod in SHOWS:
            await show.stop_output(prod)
        for prod in SHOWS:
            await until(
                partial(asyncio.to_thread, lambda p=prod: rtmp.publishers(p) == 0), 10, "ended"
            )
        for prod in SHOWS:
            pushes = [decode_recording(path, kills_from) for path in rtmp.recordings(prod)]
            print(f"{prod}: {[(p.frames, round(p.longest_gap_s, 2)) for p in pushes]}")
            # The first publish, and one after the takeover if its distribution replica was the
            # one killed (show A's).
            killed = pushing[prod] == pushing["show-a"]
            assert len(pushes) == (2 if killed else 1), (prod, pushing)
            # Black is Y 16; the darkest picture allowed is distribution's "program will resume"
            # slate (navy, mean Y 30) while the mixer's show moves.
            assert all(p.frames > 25 * 5 and p.darkest > 24 for p in pushes), pushes
            assert all(p.longest_gap_s <= 0.5 for p in pushes), pushes  # the target: 1 s
            if prod == "show-a":
                # The badge on the program throughout the kills (the keyed layer arrives a few
                # pictures after the show moved to the other mixer).
                program = sum(p.program_since for p in pushes)
                assert sum(p.badge_since for p in pushes) > 0.95 * program, pushes
            else:
                assert sum(p.with_badge for p in pushes) == 0  # each show its own program

        # Every alert raised once until it clears, and cleared with its raise's id.
        firing: dict[tuple[str, str], str] = {}
        for alert in alerts:
            about = (alert.condition, alert.target)
            if alert.state == monitoring_pb2.ALERT_STATE_RAISED:
                assert about not in firing, f"{about} raised twice"
                firing[about] = alert.id
            else:
                assert firing.pop(about, None) == alert.id, f"{about} cleared without its raise"
        assert any(a.condition == "source_lost" and a.target == "sz" for a in alerts)

        # Every replica is back, and the control room lists the shows (asking the mixers).
        for name in (n for s in KILL_ORDER for n in cluster.replica_names(s)):
            assert cluster.processes[name].alive, name
        for name in cluster.replica_names("control"):
            listed = partial(show.control_answers, name, "/api/productions")
            await until(listed, 10, f"{name} listing the productions")
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await bus.drain()
        rtmp.cleanup()
