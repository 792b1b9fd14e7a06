"""A program feed whose picture and sound can be switched while subscribers watch.

`FakeMediaServer` renders each card's picture once per subscription; confidence monitoring needs a
moving picture that can go black, freeze or fall silent mid-stream, so this serves a `LiveCard`
frame by frame, at most at the rendition's frame rate: a luma ramp that moves 4 px a frame (or
stands still), black, and a 1 kHz tone whose amplitude can be changed (0 = digital silence).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from services.common.gen.baycast.v1 import media_pb2
from services.common.media import i420_to_proto, now_us, pcm_to_proto
from tests.support.media_source import SAMPLE_RATE, Card, FakeMediaServer

# A 1 kHz stereo sine at -23 dBFS reads -23 LUFS: on target, so loudness stays quiet.
ON_TARGET_AMPLITUDE = 10 ** (-23 / 20)
BLACK_Y = 16


@dataclass
class LiveCard(Card):
    moving: bool = True
    black: bool = False

    def frame(self, width: int, height: int, sequence: int) -> np.ndarray:
        image = self.image(width, height)
        if self.black:
            image[:height] = BLACK_Y
            image[height:] = 128
        elif self.moving:
            ramp = (np.arange(width) * 2 + sequence * 4) % 200 + 30
            image[:height] = ramp.astype(np.uint8)
        return image


class LiveMediaServer(FakeMediaServer):
    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        card = self.cards.get(request.handle)
        if not isinstance(card, LiveCard):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no handle {request.handle!r}")
            return
        r = request.rendition
        width, height = r.width or 320, r.height or 180
        channels = r.audio_channels or 2
        samples_per_frame = SAMPLE_RATE // card.fps
        # The rendition's frame rate is a maximum: frames above it are dropped, never duplicated.
        video_every = max(1, round(card.fps / r.fps)) if r.fps else 1
        start = time.monotonic()
        seq = 0
        while not card.ended:
            await asyncio.sleep(max(0.0, start + seq / card.fps - time.monotonic()))
            if card.paused:  # the stream stays open but nothing comes: a dead feed
                seq += 1
                continue
            pts = seq * 1_000_000 // card.fps
            if seq % video_every == 0:
                image = card.frame(width, height, seq)
                yield media_pb2.MediaFrame(
                    video=i420_to_proto(image, pts_us=pts, capture_time_us=now_us(), sequence=seq)
                )
            pcm = card.audio(seq * samples_per_frame, samples_per_frame, channels)
            yield media_pb2.MediaFrame(
                audio=pcm_to_proto(pcm, SAMPLE_RATE, pts_us=pts, capture_time_us=now_us())
            )
            card.frames_sent += 1
            seq += 1
