"""A production's clips (services/mixer/clips.py) over a stand-in library, the clip source's
checks, the rundown's `play` check and `baycast ctl clip`'s flags."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2, rundown_pb2
from services.common.media_library import MediaNotFound
from services.mixer import clip_ctl, rundown
from services.mixer.clips import ClipDeck
from services.mixer.feeds import FeedSet
from services.mixer.productions import normalize
from tests.support.media_files import write_clip, write_still

Transport = mixer_pb2.MixerCommand.Transport


class Library:
    """The library's `fetch`, from a folder of files named by id."""

    def __init__(self, files: dict[str, Path]) -> None:
        self.files = files

    async def fetch(self, media_id: str, folder: Path) -> Path:
        if media_id not in self.files:
            raise MediaNotFound(f"{media_id!r} is not in the media library")
        return self.files[media_id]


def production(
    *sources: mixer_pb2.ProductionSource, width: int = 320, height: int = 180
) -> mixer_pb2.Production:
    return mixer_pb2.Production(
        id="p", width=width, height=height, fps=25, sample_rate=48_000, channels=2, sources=sources
    )


async def deck_with(tmp_path: Path, *sources: mixer_pb2.ProductionSource) -> tuple[ClipDeck, Any]:
    files = {
        "count": write_clip(tmp_path / "count.mp4", seconds=0.4),
        "card": write_still(tmp_path / "card.png"),
    }
    library = Library(files)
    sound: list[tuple[str, np.ndarray]] = []

    async def open_library() -> Any:
        return library

    none: Any = None
    feeds = FeedSet(none, none, 25, "t", 5.0, lambda *_: None)
    deck = ClipDeck(
        production(*sources), feeds, lambda s, pcm: sound.append((s, pcm)), open_library, tmp_path
    )
    for _ in range(200):
        if all(d.player is not None or d.error for d in deck.decks.values()):
            break
        await asyncio.sleep(0.02)
    return deck, sound


async def test_a_clip_and_a_still_fill_their_feeds_and_the_clip_its_sound(tmp_path: Path) -> None:
    clip = mixer_pb2.ProductionSource(id="clip/count", end=mixer_pb2.CLIP_END_SLATE)
    deck, sound = await deck_with(tmp_path, clip, mixer_pb2.ProductionSource(id="clip/card"))
    try:
        states = deck.tick(0.0)
        assert states is not None  # loaded: a change to publish
        assert [c.state for c in states.clips] == [mixer_pb2.CLIP_RUN_STATE_CUED] * 2
        assert deck.feeds.get("clip/card", 160, 90).latest is not None  # any size: the one feed
        assert deck.feeds.any_frame("clip/count") is not None
        assert sound == []  # cued: silent

        deck.transport(Transport(source="clip/count", action=mixer_pb2.TRANSPORT_ACTION_PLAY))
        ended_at = None
        for tick in range(40):
            states = deck.tick(tick * 0.04)
            if deck.decks["clip/count"].player.ended:  # type: ignore[union-attr]
                ended_at = tick
                break
        assert ended_at is not None and 9 <= ended_at <= 11  # 10 frames
        assert {s for s, _ in sound} == {"clip/count"}
        assert all(pcm.shape == (1920, 2) for _, pcm in sound)
        deck.tick(1.0)
        assert deck.feeds.any_frame("clip/count") is None  # the slate shows
        assert deck.remaining_s("clip/card") is None
    finally:
        await deck.close()


async def test_transport_refusals(tmp_path: Path) -> None:
    deck, _ = await deck_with(
        tmp_path,
        mixer_pb2.ProductionSource(id="clip/count"),
        mixer_pb2.ProductionSource(id="clip/x"),
    )
    try:
        with pytest.raises(errors.NotFound):
            deck.transport(Transport(source="gz", action=mixer_pb2.TRANSPORT_ACTION_PLAY))
        with pytest.raises(errors.Conflict, match="'x' is not in the media library"):
            deck.transport(Transport(source="clip/x", action=mixer_pb2.TRANSPORT_ACTION_PLAY))
        with pytest.raises(errors.InvalidArgument):
            deck.transport(
                Transport(
                    source="clip/count", action=mixer_pb2.TRANSPORT_ACTION_SEEK, position_ms=60_000
                )
            )
        failed = next(c for c in deck.states() if c.source == "clip/x")
        assert failed.state == mixer_pb2.CLIP_RUN_STATE_FAILED and "'x'" in failed.error
    finally:
        await deck.close()


async def test_a_removed_clip_leaves_the_feeds(tmp_path: Path) -> None:
    deck, _ = await deck_with(tmp_path, mixer_pb2.ProductionSource(id="clip/count"))
    try:
        deck.set_sources([mixer_pb2.ProductionSource(id="gz")])
        assert deck.decks == {} and "clip/count" not in deck.feeds.local
    finally:
        await deck.close()


def test_a_clip_source_is_checked() -> None:
    def hd(source: mixer_pb2.ProductionSource) -> mixer_pb2.Production:
        return production(source, width=1280, height=720)

    ok = normalize(hd(mixer_pb2.ProductionSource(id="clip/opener", loop=True)))
    assert ok.sources[0].name == "clip/opener"
    for bad, field in (
        (mixer_pb2.ProductionSource(id="clip/Opener"), "sources[0].id"),
        (mixer_pb2.ProductionSource(id="clip/"), "sources[0].id"),
        (mixer_pb2.ProductionSource(id="gz", loop=True), "sources[0]"),
        (mixer_pb2.ProductionSource(id="gz", end=mixer_pb2.CLIP_END_NEXT), "sources[0]"),
    ):
        with pytest.raises(errors.InvalidArgument) as caught:
            normalize(hd(bad))
        assert caught.value.field == field


def test_a_rundown_plays_only_a_clip_of_the_production() -> None:
    p = production(
        mixer_pb2.ProductionSource(id="clip/opener"), mixer_pb2.ProductionSource(id="gz")
    )
    seg = rundown_pb2.RundownSegment
    rundown.validate(rundown_pb2.Rundown(segments=[seg(play="clip/opener")]), p)
    for play in ("gz", "clip/other"):
        with pytest.raises(errors.InvalidArgument) as caught:
            rundown.validate(rundown_pb2.Rundown(segments=[seg(play=play)]), p)
        assert caught.value.field == "load.segments[0].play"


def test_ctl_clip_flags() -> None:
    def args(action: str, at: float | None = None, **rest: Any) -> argparse.Namespace:
        fields = {"loop": None, "end": None, **rest}
        return argparse.Namespace(source="clip/opener", action=action, at=at, **fields)

    seek = clip_ctl.command(args("seek", 12.5, loop=True, end="next"))
    assert (seek.action, seek.position_ms, seek.loop, seek.end) == (
        mixer_pb2.TRANSPORT_ACTION_SEEK,
        12_500,
        True,
        mixer_pb2.CLIP_END_NEXT,
    )
    assert not clip_ctl.command(args("play")).HasField("loop")
    for bad in (args("seek"), args("play", 3.0), args("cue", -1.0)):
        with pytest.raises(errors.InvalidArgument):
            clip_ctl.command(bad)
    state = mixer_pb2.ClipState(
        source="clip/opener",
        state=mixer_pb2.CLIP_RUN_STATE_PLAYING,
        position_ms=61_500,
        duration_ms=90_000,
        remaining_ms=28_500,
        end=mixer_pb2.CLIP_END_NEXT,
    )
    assert clip_ctl.describe(state) == (
        "clip/opener playing at 1:01.5 of 1:30.0 remaining 0:28.5 loop=off end=next"
    )


async def test_transport_while_loading_acts_once_the_clip_is_open(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "count.mp4", seconds=0.4)
    release = asyncio.Event()

    class SlowLibrary:
        async def fetch(self, media_id: str, folder: Path) -> Path:
            await release.wait()
            return path

    async def open_library() -> Any:
        return SlowLibrary()

    none: Any = None
    feeds = FeedSet(none, none, 25, "t", 5.0, lambda *_: None)
    deck = ClipDeck(
        production(mixer_pb2.ProductionSource(id="clip/count")),
        feeds,
        lambda *_: None,
        open_library,
        tmp_path,
    )
    try:
        assert [c.state for c in deck.states()] == [mixer_pb2.CLIP_RUN_STATE_LOADING]
        cue = Transport(source="clip/count", action=mixer_pb2.TRANSPORT_ACTION_CUE)
        deck.transport(cue)
        deck.transport(Transport(source="clip/count", action=mixer_pb2.TRANSPORT_ACTION_PLAY))
        release.set()
        for _ in range(200):
            if deck.decks["clip/count"].player is not None:
                break
            await asyncio.sleep(0.02)
        assert [c.state for c in deck.states()] == [mixer_pb2.CLIP_RUN_STATE_PLAYING]
    finally:
        await deck.close()
