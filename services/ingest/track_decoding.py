"""Decoding of WHIP tracks: the one place baycast reaches into aiortc's receiver.

Why this module exists: aiortc 1.16 decodes each received track in a thread of its own
(`aiortc.rtcrtpreceiver.decoder_worker`) and hands each decoded frame back to the event loop,
into the track's queue, whence a task awaiting `track.recv()` takes it. Two things are missing:

* A payload that fails to decode is logged and a keyframe asked for, but nothing counts it, so
  a WHIP source reported 0 decode errors however damaged its pictures were (RTMP and SRT count
  theirs). aiortc offers no callback and no statistic for it.
* Each frame crosses threads twice and wakes a task: the receiver's `queue.Queue` wakes the
  decoder thread, the thread schedules the frame onto the loop, the track's queue wakes the
  reader. For sound that is 50 crossings a second a contribution for 20 ms of Opus that takes
  tens of microseconds to decode: the crossings cost more than the decoding.

What it changes, for the tracks a `WhipSource` registers with `watch(receiver, counter)` from
its `track` event (before the connection starts):

* **Video** is decoded in aiortc's thread by `_watched_worker` instead of aiortc's worker
  (`install()` replaces `decoder_worker`, the thread's target, in `aiortc.rtcrtpreceiver`):
  each decoded payload reaches the loop by one `call_soon_threadsafe`.
* **Sound** is decoded on the event loop, as the receiver's jitter buffer completes each
  payload: the receiver's decoder queue is replaced by a `LoopDecoder` whose `put` decodes, and
  the thread aiortc starts for the track finds nothing to do and ends.
* Either way, each payload that fails to decode is counted in the source's counter, logged, and
  reported to the receiver (which asks the sender for a keyframe) with the decoder kept; decoded
  frames go to the `Delivery`: to the source's sink once it is `started`, into the track's queue
  until then; the track's queue gets `None` when the payloads end, so `track.recv()` ends.

Tracks nobody watches (and every other aiortc peer in the process, such as a station client in
a test) decode as aiortc does. A damaged picture the decoder conceals without an error is not
counted, as with RTMP and SRT.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

import aiortc.rtcrtpreceiver
import av
import structlog
from aiortc import RTCRtpReceiver
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder

log = structlog.get_logger("ingest.decode")

DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
DECODE_ERROR = "_RTCRtpReceiver__decoder_error"


class DecodeErrorCounter:
    """Payloads that failed to decode, counted from decoder threads and the loop, read from the
    event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self) -> None:
        with self._lock:
            self._count += 1


class Delivery:
    """Where a watched track's decoded frames go (on the event loop only): the track's queue
    until `start(sink)`, then `sink`, called with each frame in order."""

    def __init__(self, track_queue: asyncio.Queue[Any], counter: DecodeErrorCounter) -> None:
        self.track_queue = track_queue
        self.counter = counter
        self._sink: Callable[[Any], None] | None = None
        self._sink_failed = False

    def start(self, sink: Callable[[Any], None]) -> None:
        """Hand `sink` the frames queued so far, then every frame as it is decoded. The track's
        end, if it came already, stays queued for its reader."""
        while not self.track_queue.empty():
            frame = self.track_queue.get_nowait()
            if frame is None:
                self.track_queue.put_nowait(None)
                return
            sink(frame)
        self._sink = sink

    def frames(self, frames: list[Any]) -> None:
        sink = self._sink
        if sink is None:
            for frame in frames:
                self.track_queue.put_nowait(frame)
            return
        for frame in frames:
            try:
                sink(frame)
            except Exception:
                # Sound is delivered from inside aiortc's receive path: what the sink raises
                # must not end the connection. The first failure is logged with its trace.
                if not self._sink_failed:
                    log.exception("frame_delivery_failed")
                self._sink_failed = True

    def end(self) -> None:
        self.track_queue.put_nowait(None)


def open_decoder(codec: Any) -> Decoder:
    """aiortc's decoder for `codec`, a picture decoder on one thread.

    A track's pictures are decoded in a thread of its own already; FFmpeg's automatic threads
    would add as many again to each decoder (the cores + 1), woken for the slices of every
    picture, while a dozen tracks share a few cores: in one thread, a 720p picture of the
    stations' card decodes in under a millisecond with a tenth less CPU.
    """
    decoder = get_decoder(codec)
    context = getattr(decoder, "codec", None)
    if isinstance(context, av.VideoCodecContext) and not context.is_open:
        context.thread_count = 1
    return decoder


class PayloadDecoder:
    """One track's decoder: payloads in, frames out, failures counted and reported."""

    def __init__(self, delivery: Delivery, decode_error: threading.Event) -> None:
        self.delivery = delivery
        self.decode_error = decode_error
        self._decoder: Decoder | None = None
        self._codec = ""

    def decode(self, codec: Any, encoded_frame: Any) -> list[Any]:
        if self._decoder is None or codec.name != self._codec:
            self._decoder, self._codec = open_decoder(codec), codec.name
        try:
            return self._decoder.decode(encoded_frame)
        except av.FFmpegError as exc:
            # The decoder keeps its state: a new one would fail until the next keyframe.
            self.delivery.counter.add()
            log.warning("decode_failed", codec=self._codec, error=str(exc))
            self.decode_error.set()
            return []


class LoopDecoder:
    """Stands in for a receiver's decoder queue: `put` decodes the payload on the event loop
    and delivers its frames; `None` ends the track."""

    def __init__(self, decoder: PayloadDecoder) -> None:
        self._decoder = decoder

    def put(self, task: tuple[Any, Any] | None) -> None:
        if task is None:
            self._decoder.delivery.end()
            return
        frames = self._decoder.decode(*task)
        if frames:
            self._decoder.delivery.frames(frames)


_original_decoder_worker = aiortc.rtcrtpreceiver.decoder_worker
# A watched video track's delivery rides on the track's frame queue, which is what aiortc
# hands the track's decoder thread: it goes with the track.
DELIVERY = "_baycast_delivery"


def install() -> None:
    """Replace aiortc's decoder thread target (idempotent)."""
    aiortc.rtcrtpreceiver.decoder_worker = _decoder_worker


def watch(receiver: RTCRtpReceiver, counter: DecodeErrorCounter) -> Delivery:
    """Decode `receiver`'s track as above (before its connection starts), counting failures in
    `counter`; the returned delivery takes the source's sink when the source runs.

    aiortc starts the track's decoder thread when the connection is up, after the `track`
    event: registering from that event's handler is in time.
    """
    install()  # a sound track's thread, too, must find it has nothing to do
    track = receiver.track
    delivery = Delivery(track._queue, counter)  # type: ignore[attr-defined]
    if track.kind == "audio":
        decode_error = getattr(receiver, DECODE_ERROR, None)
        if not isinstance(getattr(receiver, DECODER_QUEUE, None), queue.Queue) or not isinstance(
            decode_error, threading.Event
        ):
            raise RuntimeError("aiortc changed: RTCRtpReceiver has no decoder queue to replace")
        setattr(receiver, DECODER_QUEUE, LoopDecoder(PayloadDecoder(delivery, decode_error)))
    else:
        setattr(delivery.track_queue, DELIVERY, delivery)
    return delivery


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any] | LoopDecoder,
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    if isinstance(input_q, LoopDecoder):
        return  # decoded on the loop: this thread has nothing to do
    delivery = getattr(output_q, DELIVERY, None)
    if delivery is None:
        _original_decoder_worker(loop, input_q, output_q, decode_error)
    else:
        _watched_worker(loop, input_q, PayloadDecoder(delivery, decode_error))


def _watched_worker(
    loop: asyncio.AbstractEventLoop, input_q: queue.Queue[Any], decoder: PayloadDecoder
) -> None:
    try:
        while (task := input_q.get()) is not None:
            frames = decoder.decode(*task)
            if frames:
                loop.call_soon_threadsafe(decoder.delivery.frames, frames)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads the track
            loop.call_soon_threadsafe(decoder.delivery.end)
