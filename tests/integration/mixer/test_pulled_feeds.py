"""On one host the mixer pulls its sources' pictures and sound from ingest's rings at its clock.

A real ingest with a station publishing its test card over WHIP, a real mixer: ingest tells the
mixer's video subscriptions their ring once and sends no message per frame, and the program
still carries the station's picture at the station's rate (its colours, its capture times); the
sound subscription is told its sound ring once, and every chunk of the station's sound reaches
the mixer through it.
"""

from __future__ import annotations

import asyncio

import pytest

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.service import MixerService
from tests.integration.mixer.conftest import CreateProduction
from tests.support.mixer import card_on_program, command, frames, unique
from tests.support.nats import NatsServer
from tests.support.station import add_station, publishing, running_ingest, wait_online

pytestmark = pytest.mark.timeout(120)

STATION = "pull-a"
WINDOW_S = 4.0


async def test_the_mixer_pulls_pictures_from_ingests_ring_with_no_message_per_frame(
    nats_server: NatsServer, bus: Bus, mixer: MixerService, create_production: CreateProduction
) -> None:
    prod = unique("pull")
    async with running_ingest(nats_server.url) as ingest:
        token = await add_station(ingest, STATION, "拉台")
        async with publishing(ingest, STATION, token, size=(640, 360)) as station:
            await wait_online(ingest, STATION)
            await create_production(
                mixer_pb2.Production(
                    id=prod,
                    width=1280,
                    height=720,
                    fps=25,
                    sources=[mixer_pb2.ProductionSource(id=STATION, name="拉台")],
                )
            )
            Cmd = mixer_pb2.MixerCommand
            await command(bus, prod, Cmd(cut=Cmd.Cut(source=STATION)))
            await card_on_program(mixer.grpc_endpoint, prod, station.card, 1280, 720)

            hub = ingest.sources.hub(STATION)
            assert hub is not None
            video_subs = [s for s in hub.fanout.subscriptions() if s.video is not None]
            assert video_subs and all(s.pull and s.ring for s in video_subs)
            feeds = mixer.running[prod].runner.feeds
            feed = next(f for f in feeds.video.values() if f.source == STATION)
            assert feed.ring.segment in {s.ring for s in video_subs}

            sound_subs = [s for s in hub.fanout.subscriptions() if s.audio is not None]
            assert len(sound_subs) == 1 and sound_subs[0].pull_sound
            sound = feeds._sound[STATION]
            assert sound.segment == sound_subs[0].sound_ring

            messages = {id(s): s.messages for s in video_subs + sound_subs}
            produced, pulled = hub.measurements.video_frames, feed.frames
            opus_frames, chunk_next = hub.measurements.audio_frames, sound.next
            captures: list[int] = []
            program_frames = 0

            async def watch() -> None:
                nonlocal program_frames
                async for message in frames(mixer.grpc_endpoint, f"prod/{prod}/program"):
                    if message.WhichOneof("body") == "video":
                        program_frames += 1
                        captures.append(message.video.capture_time_us)

            watcher = asyncio.create_task(watch())
            await asyncio.sleep(WINDOW_S)
            watcher.cancel()
            produced = hub.measurements.video_frames - produced
            pulled = feed.frames - pulled
            opus_frames = hub.measurements.audio_frames - opus_frames
            chunks = sound.next - chunk_next

            # Every picture the station sent reached the program through the ring ...
            assert produced >= WINDOW_S * 25 * 0.8
            assert pulled >= produced * 0.9
            # ... and not one message went to the mixer's video subscriptions meanwhile.
            assert {id(s): s.messages for s in video_subs + sound_subs} == messages
            assert all(s.messages == 1 for s in video_subs + sound_subs)  # the ring, told once
            # Sound: the station's 20 ms Opus frames went out as 40 ms chunks, every one read.
            assert opus_frames >= WINDOW_S * 50 * 0.8
            assert abs(chunks - opus_frames / 2) <= 1
            assert sound.lost == 0
            # The program ran at its clock and carried the station's capture times, new ones
            # at the station's rate (a repeat is a tick that found no newer picture).
            assert program_frames >= WINDOW_S * 25 * 0.9
            distinct = len(set(captures))
            assert distinct >= program_frames * 0.8
            assert sorted(captures) == captures
