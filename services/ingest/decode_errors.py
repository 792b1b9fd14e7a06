"""Decode errors of WHIP tracks: the one place baycast reaches into aiortc's receiver.

Why this module exists: aiortc 1.16 decodes each received track in a thread of its own
(`aiortc.rtcrtpreceiver.decoder_worker`). When a payload fails to decode, that thread catches
`av.FFmpegError`, logs a warning, asks the sender for a keyframe and goes on: nothing counts the
failure, so a WHIP source reported 0 decode errors however damaged its pictures were (RTMP and
SRT count theirs). aiortc offers no callback and no statistic for it.

What it changes, once (`install()`), and only in `aiortc.rtcrtpreceiver`: `decoder_worker`, the
thread's target, which aiortc calls with the track's queue of payloads, the track's frame queue
and the event it sets on a failure (its receiver then asks the sender for a keyframe). For a
track registered with `watch(track, counter)`, the thread runs `_watched_worker` instead of
aiortc's: the same contract (payloads decoded in order, a failure logged, `decode_error` set and
the decoder kept, `None` queued when the payloads end), plus

* each payload that fails to decode is counted in the track's counter;
* decoded frames reach the track's queue by one `call_soon_threadsafe` a payload (aiortc's worker
  schedules a coroutine and a task a frame with `run_coroutine_threadsafe`: ~20 µs more of the
  event loop's time a frame, and ingest receives ~900 frames a second at twelve sources).

Tracks nobody watches (and every other aiortc peer in the process, such as a station client in
a test) run aiortc's worker as before. A damaged picture the decoder conceals without an error
is not counted, as with RTMP and SRT.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import weakref
from typing import Any

import aiortc.rtcrtpreceiver
import av
import structlog
from aiortc.codecs import get_decoder
from aiortc.codecs.base import Decoder
from aiortc.mediastreams import MediaStreamTrack

log = structlog.get_logger("ingest.decode")


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


_original_decoder_worker = aiortc.rtcrtpreceiver.decoder_worker
# A track's frame queue (what aiortc hands its decoder thread) -> the counter of its source.
_watched: weakref.WeakKeyDictionary[asyncio.Queue[Any], DecodeErrorCounter] = (
    weakref.WeakKeyDictionary()
)
_watched_lock = threading.Lock()


def install() -> None:
    """Replace aiortc's decoder thread target (idempotent)."""
    aiortc.rtcrtpreceiver.decoder_worker = _decoder_worker


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
        counter = _watched.get(output_q)
    if counter is None:
        _original_decoder_worker(loop, input_q, output_q, decode_error)
    else:
        _watched_worker(loop, input_q, output_q, decode_error, counter)


def _watched_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue[Any],
    output_q: asyncio.Queue[Any],
    decode_error: threading.Event,
    counter: DecodeErrorCounter,
) -> None:
    decoder: Decoder | None = None
    codec_name = ""
    try:
        while (task := input_q.get()) is not None:
            codec, encoded_frame = task
            if decoder is None or codec.name != codec_name:
                decoder, codec_name = get_decoder(codec), codec.name
            try:
                frames = decoder.decode(encoded_frame)
            except av.FFmpegError as exc:
                # The decoder keeps its state: a new one would fail until the next keyframe.
                counter.add()
                log.warning("decode_failed", codec=codec_name, error=str(exc))
                decode_error.set()
                continue
            if frames:
                loop.call_soon_threadsafe(_queue_all, output_q, frames)
    finally:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads the track
            loop.call_soon_threadsafe(output_q.put_nowait, None)


def _queue_all(output_q: asyncio.Queue[Any], frames: list[Any]) -> None:
    for frame in frames:
        output_q.put_nowait(frame)
