"""A real gRPC media producer for tests of consumers (mixer, distribution, monitoring).

Each handle is a solid-colour card (exact Y, U, V values, easy to check after compositing) with a
sine tone at its own frequency, at a steady frame rate. A handle can be paused (the stream stays
open but goes silent, like a feed that stops dead) or ended.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from services.common import shared_memory
from services.common.gen.baycast.v1 import media_pb2, media_pb2_grpc
from services.common.handles import HandleDirectory
from services.common.media import (
    i420_message,
    i420_shared_message,
    now_us,
    pcm_message,
    proto_to_pcm,
    ring_notice,
)
from services.common.rpc import SERVER_OPTIONS
from services.common.shared_memory import RingHolder
from services.common.sound_ring import SoundRing

SAMPLE_RATE = 48_000


@dataclass
class Card:
    name: str
    yuv: tuple[int, int, int]
    tone_hz: float = 1000.0
    amplitude: float = 0.25
    fps: int = 25
    paused: bool = False
    ended: bool = False
    frames_sent: int = 0

    def image(self, width: int, height: int) -> np.ndarray:
        image = np.empty((height * 3 // 2, width), dtype=np.uint8)
        image[:height] = self.yuv[0]
        flat = image.reshape(-1)
        c = (width // 2) * (height // 2)
        flat[width * height : width * height + c] = self.yuv[1]
        flat[width * height + c :] = self.yuv[2]
        return image

    def audio(self, start_sample: int, count: int, channels: int) -> np.ndarray:
        t = (np.arange(count) + start_sample) / SAMPLE_RATE
        mono = (np.sin(2 * np.pi * self.tone_hz * t) * self.amplitude * 32767).astype(np.int16)
        return np.repeat(mono[:, None], channels, axis=1)


class FakeMediaServer(media_pb2_grpc.MediaServicer):
    def __init__(self) -> None:
        self.cards: dict[str, Card] = {}
        self.server: grpc.aio.Server | None = None
        self.port = 0
        self.requests: list[media_pb2.SubscribeRequest] = []  # every Subscribe, in order

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def add(self, card: Card) -> Card:
        self.cards[card.name] = card
        return card

    async def start(self) -> FakeMediaServer:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        media_pb2_grpc.add_MediaServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def announce(self, directory: HandleDirectory) -> None:
        for name in self.cards:
            await directory.announce(name, self.endpoint)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0.5)

    async def Subscribe(
        self, request: media_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        self.requests.append(request)
        card = self.cards.get(request.handle)
        if card is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no handle {request.handle!r}")
            return
        r = request.rendition
        width, height = r.width or 1280, r.height or 720
        channels = r.audio_channels or 2
        image = card.image(width, height)
        # A same-host subscriber gets the pictures through a shared-memory ring, as from ingest
        # (by message, or pulling them from the ring).
        ring = RingHolder(16) if shared_memory.accepts(request) else None
        # Sound, too, through a ring when the subscriber pulls it (one ring per subscription).
        sound = SoundRing() if request.pull_sound and ring is not None else None
        told = ""  # a pulling subscriber is told the ring, then reads it at its own clock
        told_sound = False
        try:
            async for message in self._frames(card, r, image, channels, ring):
                body = message.WhichOneof("body")
                if request.pull and ring is not None and body == "video":
                    notice = ring_notice(told, message)
                    if notice is None:
                        continue
                    message, told = notice, notice.ring.segment
                if sound is not None and body == "audio":
                    audio = message.audio
                    sound.write(
                        proto_to_pcm(audio),
                        audio.sample_rate,
                        pts_us=audio.pts_us,
                        capture_time_us=audio.capture_time_us,
                        sequence=audio.sequence,
                    )
                    if told_sound:
                        continue
                    told_sound = True
                    message = media_pb2.MediaFrame(
                        sound_ring=media_pb2.SoundRing(segment=sound.name, first=1)
                    )
                yield message
        finally:
            if ring is not None:
                ring.close()
            if sound is not None:
                sound.close()

    async def _frames(
        self,
        card: Card,
        r: media_pb2.Rendition,
        image: np.ndarray,
        channels: int,
        ring: RingHolder | None,
    ) -> AsyncIterator[media_pb2.MediaFrame]:
        start = time.monotonic()
        interval = 1 / card.fps
        # Fewer pictures a second when asked, as ingest sends them (sound stays whole).
        picture_every = round(card.fps / r.fps) if 0 < r.fps < card.fps else 1
        samples_per_frame = SAMPLE_RATE // card.fps
        seq = 0
        sample = 0
        while not card.ended:
            due = start + seq * interval
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if card.paused:
                seq += 1
                sample += samples_per_frame
                continue
            pts = seq * 1_000_000 // card.fps
            picture = not r.no_video and seq % picture_every == 0
            if picture and ring is not None:
                yield i420_shared_message(
                    ring, image, pts_us=pts, capture_time_us=now_us(), sequence=seq
                )
            elif picture:
                yield i420_message(image, pts_us=pts, capture_time_us=now_us(), sequence=seq)
            if not r.no_audio:
                pcm = card.audio(sample, samples_per_frame, channels)
                yield pcm_message(
                    pcm, SAMPLE_RATE, pts_us=pts, capture_time_us=now_us(), sequence=seq
                )
            card.frames_sent += 1
            seq += 1
            sample += samples_per_frame
