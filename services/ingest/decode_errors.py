"""Decode errors of WHIP tracks: the one place baycast reaches into aiortc's receiver.

Why this module exists: aiortc 1.16 decodes each received track in a thread of its own
(`aiortc.rtcrtpreceiver.decoder_worker`). When a payload fails to decode, that thread catches
`av.FFmpegError`, logs a warning, asks the sender for a keyframe and goes on: nothing counts the
failure, so a WHIP source reported 0 decode errors however damaged its pictures were (RTMP and
SRT count theirs). aiortc offers no callback and no statistic for it.

What it changes, once (`install()`), and only in `aiortc.rtcrtpreceiver`:

* `decoder_worker`, the thread's target, is called with the track's frame queue. The wrapper
  looks up the counter registered for that queue (`watch(track, counter)`), binds it to the
  thread, and runs aiortc's own worker unchanged.
* `get_decoder`, which aiortc's worker calls on that thread, wraps the decoder in a
  `CountingDecoder` when the thread has a counter. It counts each payload whose decoding raises
  `av.FFmpegError` and raises it again, so aiortc still logs it and sends its PLI.

Tracks nobody watches (and every other aiortc peer in the process, such as a station client in
a test) get aiortc's decoder as before. A damaged picture the decoder conceals without an error
is not counted, as with RTMP and SRT.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from typing import Any

import aiortc.rtcrtpreceiver
import av
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters


class DecodeErrorCounter:
    """Payloads that failed to decode, counted from decoder threads, read from the event loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self) -> None:
        with self._lock:
            self._count += 1


class CountingDecoder(Decoder):
    """An aiortc decoder whose failures are counted (and still raised)."""

    def __init__(self, decoder: Decoder, counter: DecodeErrorCounter) -> None:
        self.decoder = decoder
        self.counter = counter

    def decode(self, encoded_frame: JitterFrame) -> list[Any]:
        try:
            return self.decoder.decode(encoded_frame)
        except av.FFmpegError:
            self.counter.add()
            raise


_original_decoder_worker = aiortc.rtcrtpreceiver.decoder_worker
_original_get_decoder = aiortc.rtcrtpreceiver.get_decoder
# A track's frame queue (what aiortc hands its decoder thread) -> the counter of its source.
_watched: weakref.WeakKeyDictionary[asyncio.Queue[Any], DecodeErrorCounter] = (
    weakref.WeakKeyDictionary()
)
_watched_lock = threading.Lock()
_thread = threading.local()


def install() -> None:
    """Replace aiortc's decoder thread target and decoder factory (idempotent)."""
    aiortc.rtcrtpreceiver.decoder_worker = _decoder_worker
    aiortc.rtcrtpreceiver.get_decoder = _get_decoder


def watch(track: MediaStreamTrack, counter: DecodeErrorCounter) -> None:
    """Count the decode errors of a received `track` (before its connection starts) in `counter`.

    aiortc starts the track's decoder thread when the connection is up, after the `track`
    event: registering from that event's handler is in time. The entry goes with the track.
    """
    install()
    with _watched_lock:
        _watched[track._queue] = counter  # type: ignore[attr-defined]


def _decoder_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
) -> None:
    with _watched_lock:
        _thread.counter = _watched.get(output_q)
    try:
        _original_decoder_worker(loop, input_q, output_q, decode_error)
    finally:
        _thread.counter = None


def _get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    decoder = _original_get_decoder(codec)
    counter: DecodeErrorCounter | None = getattr(_thread, "counter", None)
    return decoder if counter is None else CountingDecoder(decoder, counter)
