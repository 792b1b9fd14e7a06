"""SRT returns: a station's return for hardware decoders (docs/adr/0012).

An output whose spec names a `station` is that station's return: the production's picture
(`prod/<prod>/program`, or `clean`) with the station's mix-minus (`prod/<prod>/mixminus/<station>`,
talkback included), as MPEG-TS (H.264 + AAC) over SRT, caller or listener. It is an ordinary
output otherwise: its own queue, thread, states, retries, events and relay (`sinks.RelaySink`).

    shared encodes   the picture is `LiveEncodings.video(VideoKey(picture, w, h, fps))`, the very
                     encode WHEP viewers of that picture get (one per rendition); the sound is
                     `LiveEncodings.audio(AudioKey(mixminus, "aac"))`, one per station
    one timeline     the two encodings keep clocks of their own (the picture's may have started
                     long before this return, the sound's counts samples from its own start), and
                     MPEG-TS needs one: each stream is anchored where its first packet arrived and
                     then follows its own timestamps, anchored anew when arrival runs ahead of them
                     by more than `MAX_LAG_S` (the producer paused)
    AAC in MPEG-TS   the muxer wants ADTS; the live encoder gives raw access units. The template
                     stream carries the AudioSpecificConfig of an AAC encoder opened with the same
                     parameters (LC, 48 kHz, stereo: the same two bytes and SBR signalling), from
                     which the mpegts muxer writes each frame's ADTS header. H.264 arrives Annex B
                     with SPS and PPS before every keyframe: nothing to add
    passphrase       the spec's, else the station's own (`srt_passphrase(srt_secret, station)`),
                     derived at every connection attempt, so a rotated token takes effect on the
                     next; an unknown or revoked station, or no secret, fails the output with the
                     reason, and a station revoked while its return runs ends it the same way
    listener         `srt_mode` LISTENER: the relay listens on the url's host:port and the
                     output stays connecting (no deadline) until the decoder calls; then the
                     decoder starts on a fresh keyframe (`sinks.RelaySink`)

Keeping the passphrase out of `ps`: Debian's ffmpeg 5.1 takes SRT options only as URL query
parameters or `-passphrase` (both argv), has no `-/option file` (FFmpeg 7) and reads no options
from the environment; `srt-live-transmit` takes them only in its URL; an ffconcat file can carry
an input's options but a return is an output. What 5.1 does read from a file is an output preset,
`-fpre <file>`: `key=value` lines applied as the output's options, protocol options included. The
relay gets `-fpre /dev/fd/N`, N a pipe holding `passphrase=...` and `pbkeylen=16`: the file name
is all `ps` shows, the pipe is empty once read, nothing is written to a disk or the environment.
"""

from __future__ import annotations

import asyncio
import functools
import io
import threading
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any

import av
import structlog

from services.common import errors
from services.common.credentials import PRINCIPAL_ID, srt_passphrase
from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.gen.baycast.v1 import ingest_pb2, mixer_pb2
from services.common.kv_mirror import KvMirror
from services.distribution.encoder import Templates
from services.distribution.live_encoding import (
    SAMPLE_RATE,
    AudioEncoding,
    AudioKey,
    LiveEncodings,
    VideoEncoding,
    VideoKey,
)
from services.distribution.outputs import Output
from services.distribution.packet_fanout import PacketInbox
from services.distribution.packet_queue import EncodedPacket
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import RelaySink, Sink, SinkRejected, srt_sink

PICTURES = ("program", "clean")
DEFAULT_FPS = 25
TIMELINE = Fraction(1, 90_000)
# Arrival ahead of a stream's own timestamps by this much: its producer paused; anchor anew.
MAX_LAG_S = 0.5
# How often a running return checks that its station may still have it.
CHECK_EVERY_S = 1.0

log = structlog.get_logger("distribution.srt_return")


class _Discard(io.RawIOBase):
    """Where the template container writes: only its streams' codec parameters are wanted."""

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        return len(data)


def exchange_size(height: int) -> tuple[int, int]:
    """The 16:9 picture of the exchange's height (540 -> 960 x 540)."""
    return round(height * 16 / 9 / 2) * 2, height


def return_templates(width: int, height: int, fps: int) -> Templates:
    """Streams describing a return (H.264 at the size, AAC 48 kHz stereo) for sinks to copy.

    Opening the two encoders costs a few milliseconds, once per return; nothing is encoded.
    """
    container = av.open(_Discard(), "w", format="mpegts")
    video = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
    container.start_encoding()
    # The container is not closed: the streams (and through them the container) live as long as
    # some sink still copies them, and closing it would free what they point at.
    return Templates(video, audio, {})


class ArrivalClock:
    """One encoded stream's timestamps on the return's timeline (90 kHz)."""

    def __init__(self, origin: float) -> None:
        self.origin = origin
        self.anchors = 0
        self._offset: float | None = None  # timeline seconds minus media seconds
        self._last = -1

    def __call__(self, pts: int, time_base: Fraction, now: float) -> int:
        media = float(pts * time_base)
        arrived = now - self.origin
        if self._offset is None or arrived - (media + self._offset) > MAX_LAG_S:
            self._offset = arrived - media
            self.anchors += 1
        ticks = round((media + self._offset) / TIMELINE)
        if ticks <= self._last:  # never backwards, never twice
            ticks = self._last + 1
        self._last = ticks
        return ticks


class ReturnFeed:
    """A running return's packets: the two shared encodings into its output's queue."""

    def __init__(
        self,
        video: VideoEncoding,
        audio: AudioEncoding,
        put: Callable[[EncodedPacket], None],
    ) -> None:
        self.video = video
        self.audio = audio
        self._put = put
        self._templates: Templates | None = None
        self._templates_lock = threading.Lock()
        self._inboxes: list[PacketInbox] = []
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time()
        video = self.video.fanout.add(
            PacketInbox(video=True, on_overflow=self.video.request_keyframe)
        )
        audio = self.audio.fanout.add(PacketInbox(video=False))
        self._inboxes = [video, audio]
        self._tasks = [
            asyncio.create_task(self._pump(video, ArrivalClock(origin), True)),
            asyncio.create_task(self._pump(audio, ArrivalClock(origin), False)),
        ]
        self.video.request_keyframe()

    async def close(self) -> None:
        self.video.fanout.remove(self._inboxes[0])
        self.audio.fanout.remove(self._inboxes[1])
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def request_keyframe(self) -> None:
        """Thread-safe: a new connection starts on a fresh keyframe, not the next regular one."""
        self.video.request_keyframe()

    def templates(self) -> Templates:
        """Called from the output's thread."""
        with self._templates_lock:
            if self._templates is None:
                key = self.video.key
                self._templates = return_templates(key.width, key.height, key.fps)
            return self._templates

    async def _pump(self, inbox: PacketInbox, clock: ArrivalClock, video: bool) -> None:
        loop = asyncio.get_running_loop()
        while (packet := await inbox.get()) is not None:
            if packet.pts is None or packet.time_base is None:
                continue
            pts = clock(packet.pts, packet.time_base, loop.time())
            # No B-frames and no audio reordering: decoding order is presentation order.
            self._put(
                EncodedPacket(
                    video=video,
                    data=bytes(packet),
                    pts=pts,
                    dts=pts,
                    keyframe=packet.is_keyframe,
                    time_base=TIMELINE,
                )
            )


class ReturnSink(RelaySink):
    """A return's relay that ends (for good) when its station may no longer have it."""

    def __init__(self, *args: Any, refusal: Callable[[], str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refusal = refusal
        self._checked = time.monotonic()

    def write(self, packet: EncodedPacket) -> int:
        now = time.monotonic()
        if now - self._checked >= CHECK_EVERY_S:
            self._checked = now
            reason = self._refusal()
            if reason:
                raise SinkRejected(reason)
        return super().write(packet)


class Returns:
    """The SRT returns of every production: validation, feeds, passphrases, sinks."""

    def __init__(
        self,
        encodings: LiveEncodings,
        stations: KvMirror[ingest_pb2.Station],
        productions: KvMirror[mixer_pb2.Production],
        settings: DistributionSettings,
    ) -> None:
        self.encodings = encodings
        self.stations = stations
        self.productions = productions
        self.settings = settings
        self.feeds: dict[str, ReturnFeed] = {}  # by output key <prod>.<id>

    # -- on the event loop --------------------------------------------------------------------

    def validate(self, spec: dist.OutputSpec) -> None:
        """The station a new return goes to must exist and not be revoked."""
        if not PRINCIPAL_ID.match(spec.station):
            raise errors.InvalidArgument("not a station id", field="add.output.station")
        station = self.stations.get(spec.station)
        if station is None:
            raise errors.NotFound(f"no station {spec.station!r}", field="add.output.station")
        if station.revoked:
            raise errors.InvalidArgument(
                f"station {spec.station} is revoked", field="add.output.station"
            )

    def keys(self, spec: dist.OutputSpec) -> tuple[VideoKey, AudioKey]:
        """The encodings a return takes: the exchange's picture rendition and the station's
        mix-minus in AAC."""
        prod = spec.production
        production = self.productions.get(prod)
        fps = production.fps if production is not None and production.fps else DEFAULT_FPS
        width, height = exchange_size(self.settings.return_height)
        picture = spec.picture or "program"
        return (
            VideoKey(f"prod/{prod}/{picture}", width, height, fps),
            AudioKey(f"prod/{prod}/mixminus/{spec.station}", "aac"),
        )

    async def reconcile(self, production: str, outputs: Iterable[Output]) -> None:
        """Feed the production's running returns; stop feeding the others."""
        running = {o.key: o for o in outputs if o.spec.station and o.running}
        for key in [k for k in self.feeds if k.startswith(production + ".")]:
            if key not in running:
                await self.feeds.pop(key).close()
                log.info("return_feed_stopped", output=key)
        for key, output in running.items():
            if key not in self.feeds:
                video_key, audio_key = self.keys(output.spec)
                feed = ReturnFeed(
                    self.encodings.video(video_key),
                    self.encodings.audio(audio_key),
                    output.queue.put,
                )
                feed.start()
                self.feeds[key] = feed
                log.info(
                    "return_feed_started",
                    output=key,
                    station=output.spec.station,
                    picture=video_key.handle,
                    rendition=video_key.describe(),
                )

    async def close(self) -> None:
        feeds, self.feeds = list(self.feeds.values()), {}
        for feed in feeds:
            await feed.close()

    # -- from an output's thread ----------------------------------------------------------------

    def templates(self, key: str) -> Templates | None:
        feed = self.feeds.get(key)
        return feed.templates() if feed is not None else None

    def refusal(self, station_id: str) -> str:
        """Why the station may not have its return now ("" if it may)."""
        station = self.stations.get(station_id)
        if station is None:
            return f"station {station_id} no longer exists"
        if station.revoked:
            return f"station {station_id} is revoked"
        return ""

    def passphrase(self, spec: dist.OutputSpec) -> str:
        if spec.passphrase:
            return spec.passphrase
        refusal = self.refusal(spec.station)
        if refusal:
            raise SinkRejected(refusal)
        if not self.settings.srt_secret:
            raise SinkRejected(
                "no SRT secret (BAYCAST_SRT_SECRET) to derive the station's passphrase from"
            )
        station = self.stations.get(spec.station)
        assert station is not None
        return srt_passphrase(self.settings.srt_secret, station)

    def make_sink(self, spec: dist.OutputSpec, settings: DistributionSettings) -> Sink:
        """The sink of one connection attempt (the output's sink factory)."""
        feed = self.feeds.get(f"{spec.production}.{spec.id}")
        return srt_sink(
            spec.url,
            self.passphrase(spec),
            spec.srt_mode,
            settings,
            keyframe_wanted=feed.request_keyframe if feed is not None else None,
            make=functools.partial(ReturnSink, refusal=lambda: self.refusal(spec.station)),
        )
