"""The live sources of this ingest instance: their hubs, announcements, state and statistics.

A source goes *online* when its first video frame is decoded (or after `AUDIO_ONLY_AFTER_S` if
it only sends audio): its handle `source/<id>` is announced in the handle directory, its
`SourceState` is published on `source.<id>.state` and stored in the `sources` bucket. While
online it publishes `SourceStats` on `source.<id>.stats` every `stats_interval_s`. When it ends,
the handle is withdrawn and the state goes offline with the reason.

A contribution claims its source across ingest instances (`claim`, live_claims.py) before it
starts here; the claim is released after the source has gone offline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from services.common.bus import Bus, KvBucket, subject
from services.common.gen.baycast.v1 import control_pb2
from services.common.handles import HandleDirectory
from services.common.media import now_us
from services.ingest import metrics
from services.ingest.live_claims import Claim, LiveClaims
from services.ingest.source import Source, TransportStats
from services.ingest.source_hub import SourceHub

SOURCES_BUCKET = "sources"
AUDIO_ONLY_AFTER_S = 3.0
# A session that connects nothing (or sends nothing) gives its slot back after this long.
NO_MEDIA_TIMEOUT_S = 20.0

log = structlog.get_logger("ingest.sources")


def handle_name(source_id: str) -> str:
    return f"source/{source_id}"


@dataclass(eq=False)
class LiveSource:
    source: Source
    hub: SourceHub
    state: control_pb2.SourceState
    task: asyncio.Task[None] | None = None
    last_stats: control_pb2.SourceStats = field(default_factory=control_pb2.SourceStats)
    _previous: TransportStats = field(default_factory=TransportStats)
    _previous_at: float = 0.0


class SourceRegistry:
    def __init__(
        self,
        bus: Bus,
        directory: HandleDirectory,
        endpoint: Callable[[], str],
        *,
        queue_size: int,
        stats_interval_s: float,
        claims: LiveClaims | None = None,
    ) -> None:
        self.bus = bus
        self.claims = claims  # None: this instance's own check only
        self.directory = directory
        self.endpoint = endpoint
        self.queue_size = queue_size
        self.stats_interval_s = stats_interval_s
        self.live: dict[str, LiveSource] = {}
        self._bucket: KvBucket[control_pb2.SourceState] | None = None

    async def open(self) -> None:
        self._bucket = await self.bus.kv(SOURCES_BUCKET, control_pb2.SourceState)

    async def reconcile(self) -> list[str]:
        """Mark offline the sources a previous run of this instance left online (it crashed)."""
        assert self._bucket is not None
        endpoint = self.endpoint()
        stale = []
        for source_id, state in (await self._bucket.items()).items():
            if state.online and state.handle.endpoint == endpoint and source_id not in self.live:
                state.online = False
                state.reason = "ingest restarted"
                state.since_us = now_us()
                with contextlib.suppress(Exception):
                    await self.directory.withdraw(handle_name(source_id), endpoint)
                await self._publish_state(state)
                stale.append(source_id)
        return stale

    def hub(self, source_id: str) -> SourceHub | None:
        live = self.live.get(source_id)
        return live.hub if live else None

    async def claim(self, source_id: str) -> Claim:
        """Claim `source_id` across ingest instances before `start`ing it; a contribution that
        is not started after all gives the claim back with `unclaim`."""
        if self.claims is None:
            return Claim.LIVE_HERE if source_id in self.live else Claim.TAKEN
        return await self.claims.claim(source_id)

    async def unclaim(self, source_id: str) -> None:
        if self.claims is not None:
            await self.claims.release(source_id)

    def start(self, source: Source) -> LiveSource:
        """Begin serving `source`; the caller made sure its id is free and `claim`ed it (the
        claim is released when the source ends)."""
        if source.source_id in self.live:
            raise RuntimeError(f"source {source.source_id} is already live")
        source_id = source.source_id

        def dropped(subscriber: str, frames: int) -> None:
            metrics.FRAMES_DROPPED.labels(source_id, subscriber or "unnamed").inc(frames)

        hub = SourceHub(source_id, queue_size=self.queue_size, on_drop=dropped)
        state = control_pb2.SourceState(
            source=source.source_id,
            station=source.station,
            name=source.name,
            protocol=source.protocol,
        )
        live = LiveSource(source, hub, state)
        self.live[source.source_id] = live
        metrics.SESSIONS.labels(source.protocol).inc()
        hub.start()
        live.task = asyncio.create_task(self._serve(live), name=f"source-{source.source_id}")
        return live

    async def stop(self, source_id: str, reason: str) -> bool:
        """End a live source (a WHIP DELETE, a revoked station, shutdown)."""
        live = self.live.get(source_id)
        if live is None:
            return False
        live.state.reason = reason
        await live.source.close()
        if live.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await live.task
        return True

    async def stop_all(self, reason: str) -> None:
        await asyncio.gather(*(self.stop(s, reason) for s in list(self.live)))

    async def _serve(self, live: LiveSource) -> None:
        source, hub = live.source, live.hub
        runner = asyncio.create_task(source.run(hub))
        stats_task: asyncio.Task[None] | None = None
        reason = "ended"
        try:
            if await self._wait_for_media(runner, hub):
                await self._online(live)
                stats_task = asyncio.create_task(self._stats_loop(live))
            elif not runner.done():
                live.state.reason = f"no media within {NO_MEDIA_TIMEOUT_S:g} s"
                await source.close()
            reason = await runner
        except Exception:
            log.exception("source_failed", source=source.source_id)
            reason = "internal error"
        finally:
            if stats_task is not None:
                stats_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stats_task
            if not runner.done():
                runner.cancel()
            with contextlib.suppress(BaseException):
                await runner
            with contextlib.suppress(Exception):
                await source.close()
            await hub.close()
            self.live.pop(source.source_id, None)
            metrics.SESSIONS.labels(source.protocol).dec()
            try:
                await self._offline(live, live.state.reason or reason)
            finally:
                # After the offline state, so that another instance's online state follows it.
                await self.unclaim(source.source_id)

    @staticmethod
    async def _wait_for_media(runner: asyncio.Task[str], hub: SourceHub) -> bool:
        """True once video is decoded (or audio alone has flowed a while); False if it ended
        or nothing came within NO_MEDIA_TIMEOUT_S."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while not runner.done() and loop.time() - started < NO_MEDIA_TIMEOUT_S:
            if hub.first_video.is_set():
                return True
            if hub.measurements.audio_frames and loop.time() - started >= AUDIO_ONLY_AFTER_S:
                return True
            await asyncio.wait([runner], timeout=0.1)
        return False

    async def _online(self, live: LiveSource) -> None:
        source, hub = live.source, live.hub
        snap = hub.measurements.snapshot()
        handle = await self.directory.announce(handle_name(source.source_id), self.endpoint())
        live.state.online = True
        live.state.handle.CopyFrom(handle)
        live.state.since_us = now_us()
        live.state.video.CopyFrom(
            control_pb2.VideoFormat(
                width=snap.width,
                height=snap.height,
                fps=hub.measurements.nominal_fps,
                codec=source.video_codec,
            )
        )
        if source.audio_codec:
            live.state.audio.CopyFrom(
                control_pb2.AudioFormat(sample_rate=48_000, channels=2, codec=source.audio_codec)
            )
        metrics.SOURCE_ONLINE.labels(source.source_id).set(1)
        await self._publish_state(live.state)
        log.info(
            "source_online",
            source=source.source_id,
            protocol=source.protocol,
            width=snap.width,
            height=snap.height,
        )

    async def _offline(self, live: LiveSource, reason: str) -> None:
        source = live.source
        was_online = live.state.online
        live.state.online = False
        live.state.reason = reason
        live.state.since_us = now_us()
        metrics.SOURCE_ONLINE.labels(source.source_id).set(0)
        metrics.forget_source(source.source_id)
        with contextlib.suppress(Exception):
            if was_online:
                await self.directory.withdraw(handle_name(source.source_id), self.endpoint())
            await self._publish_state(live.state)
        log.info("source_offline", source=source.source_id, reason=reason)

    async def _publish_state(self, state: control_pb2.SourceState) -> None:
        await self.bus.publish(subject("source", state.source, "state"), state)
        if self._bucket is not None:
            await self._bucket.put(state.source, state)

    async def _stats_loop(self, live: LiveSource) -> None:
        loop = asyncio.get_running_loop()
        live._previous_at = loop.time()
        while True:
            await asyncio.sleep(self.stats_interval_s)
            try:
                stats = await self.measure(live, loop.time())
                live.last_stats = stats
                self._export(stats)
                await self.bus.publish(subject("source", stats.source, "stats"), stats)
                await self._update_format(live, stats)
            except Exception:
                log.exception("source_stats_failed", source=live.source.source_id)

    async def _update_format(self, live: LiveSource, stats: control_pb2.SourceStats) -> None:
        """Publish the state again when the picture size changes or the frame rate becomes known."""
        video = live.state.video
        fps = live.hub.measurements.nominal_fps
        size_changed = stats.width and (stats.width, stats.height) != (video.width, video.height)
        if size_changed or (fps and not video.fps):
            video.width, video.height, video.fps = stats.width, stats.height, fps
            await self._publish_state(live.state)

    async def measure(self, live: LiveSource, now: float) -> control_pb2.SourceStats:
        transport = await live.source.transport_stats()
        snap = live.hub.measurements.snapshot()
        previous, elapsed = live._previous, max(now - live._previous_at, 1e-3)
        received = transport.packets_received - previous.packets_received
        lost = transport.packets_lost - previous.packets_lost
        live._previous, live._previous_at = transport, now
        metrics.SOURCE_PACKETS_DROPPED.labels(live.source.source_id).set(transport.packets_dropped)
        metrics.SOURCE_RETRANSMITS.labels(live.source.source_id).set(transport.retransmits)
        dropped = sum(s.dropped for s in live.hub.fanout.subscriptions())
        return control_pb2.SourceStats(
            source=live.source.source_id,
            time_us=now_us(),
            fps=snap.fps,
            bitrate_kbps=(transport.bytes_received - previous.bytes_received) * 8 / elapsed / 1000,
            packets_lost=transport.packets_lost,
            packets_dropped=transport.packets_dropped,
            retransmits=transport.retransmits,
            loss_fraction=lost / (received + lost) if received + lost > 0 else 0.0,
            jitter_ms=transport.jitter_ms,
            rtt_ms=transport.rtt_ms,
            decode_errors=transport.decode_errors,
            audio_level_dbfs=snap.audio_level_dbfs,
            black=snap.black,
            frozen=snap.frozen,
            silent=snap.silent,
            frames_dropped=dropped + live.hub.input_dropped,
            width=snap.width,
            height=snap.height,
        )

    @staticmethod
    def _export(stats: control_pb2.SourceStats) -> None:
        s = stats.source
        metrics.SOURCE_FPS.labels(s).set(stats.fps)
        metrics.SOURCE_BITRATE.labels(s).set(stats.bitrate_kbps)
        metrics.SOURCE_PACKETS_LOST.labels(s).set(stats.packets_lost)
        metrics.SOURCE_JITTER.labels(s).set(stats.jitter_ms)
        metrics.SOURCE_RTT.labels(s).set(stats.rtt_ms)
        metrics.SOURCE_AUDIO_LEVEL.labels(s).set(stats.audio_level_dbfs)
        metrics.SOURCE_FLAG.labels(s, "black").set(int(stats.black))
        metrics.SOURCE_FLAG.labels(s, "frozen").set(int(stats.frozen))
        metrics.SOURCE_FLAG.labels(s, "silent").set(int(stats.silent))
