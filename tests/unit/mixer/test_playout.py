"""Clips and stills played at the frame clock: clips with their frame numbers burnt in, read back
from the pictures the player gives; their sound measured with FFTs."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.clip_decoder import Framer
from services.mixer.pictures import BLACK_YUV, Picture, rgb_to_yuv
from services.mixer.playout import Playout

WIDTH, HEIGHT = 320, 240
BITS = 8  # the frame number, as blocks across the top: white a one, black a zero
BLOCK, PITCH, TOP = 24, 36, 24
RATE = 48_000


def numbered_frame(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    image = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
    for bit in range(BITS):
        x = 16 + bit * PITCH
        image[TOP : TOP + BLOCK, x : x + BLOCK] = 235 if index >> bit & 1 else 16
    return image


def frame_number(picture: Picture | None, x0: int = 0) -> int:
    """The number burnt into a picture (x0: where the clip's picture starts, when boxed)."""
    assert picture is not None
    number = 0
    for bit in range(BITS):
        x = x0 + 16 + bit * PITCH + BLOCK // 4
        if picture.y[TOP + BLOCK // 4 : TOP + BLOCK * 3 // 4, x : x + BLOCK // 2].mean() > 128:
            number |= 1 << bit
    return number


def write_clip(
    path: Path,
    frames: int,
    fps: int = 25,
    tone_hz: float | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Path:
    """An H.264 clip (B-frames, a keyframe every 10 frames) with its frame numbers burnt in, and
    optionally a mono 44.1 kHz AAC tone (resampled by the player)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps, options={"g": "10", "preset": "veryfast"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = out.add_stream("aac", rate=44_100, layout="mono") if tone_hz else None
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(numbered_frame(index, width, height), "yuv420p")
            frame.pts = index
            out.mux(video.encode(frame))
        if audio is not None:
            total, chunk = 44_100 * frames // fps, 1024
            for start in range(0, total, chunk):
                t = (start + np.arange(min(chunk, total - start))) / 44_100
                tone = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)[None]
                frame = av.AudioFrame.from_ndarray(tone, format="fltp", layout="mono")
                frame.sample_rate, frame.pts = 44_100, start
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
        out.mux(video.encode(None))
    return path


async def opened(path: Path, fps: int = 25, **kw: object) -> Playout:
    player = Playout("clip/test", path, WIDTH, HEIGHT, fps, **kw)  # type: ignore[arg-type]
    await player.open()
    return player


async def tick(player: Playout) -> tuple[Picture | None, np.ndarray | None]:
    """One tick with the decoder as far ahead as it goes (the tests do not race it)."""
    assert await player.ready()
    return player.tick()


async def numbers(player: Playout, ticks: int) -> list[int]:
    return [frame_number((await tick(player))[0]) for _ in range(ticks)]


@pytest.fixture(scope="module", params=["mp4", "ts"])
def clip40(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forty frames in MP4 (seeks by its index) and in MPEG-TS (seeks by searching the file)."""
    return write_clip(tmp_path_factory.mktemp("clips") / f"forty.{request.param}", 40)


async def test_a_clip_at_the_show_rate_shows_every_frame_once_in_order(clip40: Path) -> None:
    player = await opened(clip40)
    state = player.state()
    assert state.state == mixer_pb2.CLIP_RUN_STATE_CUED
    assert (state.position_ms, state.duration_ms) == (0, 1600)
    assert frame_number(player.tick()[0]) == 0  # cued: the first frame, still
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 40) == list(range(40))
    assert player.late_frames == 0
    await player.close()


async def test_pause_holds_the_frame_in_silence(clip40: Path) -> None:
    player = await opened(clip40)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    await numbers(player, 10)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PAUSE)
    held = [await tick(player) for _ in range(5)]
    assert [frame_number(p) for p, _ in held] == [9] * 5
    assert all(sound is None for _, sound in held)
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_PAUSED
    assert player.state().position_ms == 360  # frame 9, the one on screen: a cue there shows it
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 3) == [10, 11, 12]
    await player.close()


async def test_seek_shows_the_exact_frame_and_keeps_playing_or_paused(clip40: Path) -> None:
    player = await opened(clip40)
    player.transport(mixer_pb2.TRANSPORT_ACTION_SEEK, 1000)  # frame 25: 5 after a keyframe
    assert await numbers(player, 2) == [25, 25]
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_CUED
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 3) == [25, 26, 27]
    player.transport(mixer_pb2.TRANSPORT_ACTION_SEEK, 280)  # backwards, between keyframes
    assert await numbers(player, 3) == [7, 8, 9]
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_PLAYING
    assert player.state().position_ms == 400
    await player.close()


async def test_a_seek_then_play_at_once_starts_on_the_sought_frame(clip40: Path) -> None:
    player = await opened(clip40)
    player.transport(mixer_pb2.TRANSPORT_ACTION_CUE, 1200)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)  # the rundown cues and rolls at once
    shown = []
    for _ in range(200):
        picture, sound = player.tick()
        assert sound is not None and sound.shape == (1920, 2)
        if picture is not None and frame_number(picture) != 0:
            shown.append(frame_number(picture))
        if len(shown) == 3:
            break
        await player.ready()
    assert shown == [30, 31, 32]
    await player.close()


async def test_cue_and_stop(clip40: Path) -> None:
    player = await opened(clip40)
    player.transport(mixer_pb2.TRANSPORT_ACTION_CUE, 400)
    assert await numbers(player, 2) == [10, 10]
    state = player.state()
    assert (state.state, state.position_ms, state.remaining_ms) == (
        mixer_pb2.CLIP_RUN_STATE_CUED,
        400,
        1200,
    )
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 5) == [10, 11, 12, 13, 14]
    player.transport(mixer_pb2.TRANSPORT_ACTION_STOP)
    assert await numbers(player, 2) == [0, 0]
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_CUED
    assert player.state().position_ms == 0
    await player.close()


async def test_a_looping_clip_starts_again_without_a_stall(tmp_path: Path) -> None:
    player = await opened(write_clip(tmp_path / "twelve.mp4", 12), loop=True)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 30) == [*range(12), *range(12), *range(6)]
    assert player.late_frames == 0
    assert player.state().position_ms == 240
    player.set_loop(False)
    assert await numbers(player, 7) == [6, 7, 8, 9, 10, 11, 11]
    assert player.ended
    await player.close()


async def test_hold_at_the_end_and_ended_once(tmp_path: Path) -> None:
    player = await opened(write_clip(tmp_path / "twelve.mp4", 12))
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    seen, ended = [], []
    for _ in range(16):
        picture, sound = await tick(player)
        seen.append(frame_number(picture))
        ended.append(player.ended)
        assert (sound is None) == (len(seen) > 12)
    assert seen == [*range(12), 11, 11, 11, 11]
    assert ended == [False] * 12 + [True, False, False, False]
    state = player.state()
    assert (state.state, state.position_ms, state.remaining_ms) == (
        mixer_pb2.CLIP_RUN_STATE_ENDED,
        480,
        0,
    )
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)  # again, from the start
    assert await numbers(player, 3) == [0, 1, 2]
    assert player.late_frames == 0
    await player.close()


async def test_slate_at_the_end_and_next_holds(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "six.mp4", 6)
    player = await opened(path, end=mixer_pb2.CLIP_END_SLATE)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert await numbers(player, 6) == list(range(6))
    assert await tick(player) == (None, None)
    assert player.ended
    assert await tick(player) == (None, None)
    player.set_end(mixer_pb2.CLIP_END_NEXT)  # the wiring moves the rundown on; the frame holds
    assert frame_number((await tick(player))[0]) == 5
    player.transport(mixer_pb2.TRANSPORT_ACTION_STOP)
    assert await numbers(player, 1) == [0]
    await player.close()


async def test_a_30_fps_clip_plays_in_real_time_in_a_25_fps_show(tmp_path: Path) -> None:
    player = await opened(write_clip(tmp_path / "thirty.mp4", 60, fps=30))
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    shown = await numbers(player, 50)
    for n, index in enumerate(shown):
        assert abs(index - round(n / 25 * 30)) <= 1
    assert shown == sorted(shown) and shown[-1] >= 58
    assert len(set(shown)) == 50  # a sixth of the clip's frames are never shown
    assert player.late_frames == 0
    await player.close()


async def test_sound_is_cut_to_one_frame_a_tick_at_48_khz(tmp_path: Path) -> None:
    player = await opened(write_clip(tmp_path / "tone.mp4", 50, tone_hz=1000))
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    chunks = []
    for _ in range(30):
        _, sound = await tick(player)
        assert sound is not None and sound.shape == (1920, 2) and sound.dtype == np.int16
        chunks.append(sound)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PAUSE)
    assert (await tick(player))[1] is None
    sound = np.concatenate(chunks[5:])  # 25 frames: 1 Hz bins
    assert np.array_equal(sound[:, 0], sound[:, 1])
    spectrum = np.abs(np.fft.rfft(sound[:, 0] * np.hanning(len(sound))))
    assert np.argmax(spectrum) == 1000
    # a mono clip goes to both sides 3 dB down (libswresample's centre level): it then measures
    # as loud in stereo as it did in mono
    rms = np.sqrt(np.mean((sound[:, 0] / 32768.0) ** 2))
    assert rms == pytest.approx(0.3 / np.sqrt(2) / np.sqrt(2), rel=0.05)
    await player.close()


async def test_a_looping_clip_sounds_on_through_its_loop_point(tmp_path: Path) -> None:
    player = await opened(write_clip(tmp_path / "tone.mp4", 10, tone_hz=1000), loop=True)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    levels = []
    for _ in range(35):  # three and a half laps
        _, sound = await tick(player)
        assert sound is not None
        levels.append(np.sqrt(np.mean((sound[:, 0] / 32768.0) ** 2)))
    assert min(levels[1:]) > 0.1  # no silent tick at a loop point (AAC's start-up aside)
    await player.close()


async def test_a_25_fps_clip_in_a_30_fps_show_repeats_one_frame_in_six(clip40: Path) -> None:
    player = await opened(clip40, fps=30)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    shown, sounds = [], []
    for _ in range(30):
        picture, sound = await tick(player)
        shown.append(frame_number(picture))
        sounds.append(sound)
    assert shown == [n * 25 // 30 for n in range(30)]
    assert all(s is not None and s.shape == (1600, 2) for s in sounds)
    await player.close()


async def test_a_decoder_behind_the_clock_repeats_pictures_and_keeps_time(
    clip40: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    player = await opened(clip40, ahead_s=0.2)  # five frames decoded ahead
    slow_picture = Framer.picture

    def slow(self: Framer, frame: av.VideoFrame) -> Picture:
        time.sleep(0.05)
        return slow_picture(self, frame)

    monkeypatch.setattr(Framer, "picture", slow)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    shown = [frame_number(player.tick()[0]) for _ in range(20)]  # 20 ticks at once
    assert shown[:5] == [0, 1, 2, 3, 4]
    assert shown == sorted(shown) and len(set(shown)) < 20
    assert player.late_frames >= 10
    assert player.state().position_ms == 800  # the clip keeps the clock's time
    await player.close()


async def test_a_clip_without_sound_plays_silence(clip40: Path) -> None:
    player = await opened(clip40)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    _, sound = await tick(player)
    assert sound is not None and sound.shape == (1920, 2) and not sound.any()
    await player.close()


async def test_a_clip_of_another_aspect_is_letterboxed(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "four-three.mp4", 3)
    player = Playout("clip/boxed", path, 640, 360, 25)
    await player.open()
    picture, _ = player.tick()
    assert picture is not None and (picture.width, picture.height) == (640, 360)
    assert (picture.y[:, :78] == BLACK_YUV[0]).all() and (picture.y[:, -78:] == BLACK_YUV[0]).all()
    assert abs(int(picture.y[300, 320]) - 128) <= 2  # the clip's grey, scaled to 480x360
    await player.close()


async def test_a_still_is_one_picture_without_sound(tmp_path: Path) -> None:
    path = tmp_path / "red.png"
    Image.new("RGB", (640, 480), (255, 0, 0)).save(path)
    player = Playout("clip/red", path, WIDTH, HEIGHT, 25)
    await player.open()
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_CUED
    assert player.state().duration_ms == 0
    picture, sound = player.tick()
    assert picture is not None and sound is None
    y, u, v = rgb_to_yuv(255, 0, 0)
    assert abs(int(picture.y.mean()) - y) <= 2
    assert abs(int(picture.u.mean()) - u) <= 2 and abs(int(picture.v.mean()) - v) <= 2
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_PLAYING
    assert player.tick() == (picture, None)
    with pytest.raises(ValueError):
        player.transport(mixer_pb2.TRANSPORT_ACTION_SEEK, 1)
    await player.close()


async def test_a_file_that_cannot_be_opened_fails(tmp_path: Path) -> None:
    path = tmp_path / "broken.mp4"
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    player = Playout("clip/broken", path, WIDTH, HEIGHT, 25)
    await player.open()
    state = player.state()
    assert state.state == mixer_pb2.CLIP_RUN_STATE_FAILED and state.error
    assert player.tick() == (None, None)
    with pytest.raises(ValueError):
        player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    await player.close()


async def test_damaged_frames_are_skipped(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "damaged.ts", 40)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = (
        np.random.default_rng(3).integers(0, 256, 3000, np.uint8).tobytes()
    )
    path.write_bytes(bytes(data))
    player = await opened(path)
    player.transport(mixer_pb2.TRANSPORT_ACTION_PLAY)
    for _ in range(60):
        picture, _ = await tick(player)
        assert picture is not None
        if player.ended:
            break
    assert player.state().state == mixer_pb2.CLIP_RUN_STATE_ENDED
    assert frame_number(picture) >= 35
    await player.close()


async def test_bad_commands_are_refused(clip40: Path) -> None:
    player = await opened(clip40)
    with pytest.raises(ValueError):
        player.transport(mixer_pb2.TRANSPORT_ACTION_UNSPECIFIED)
    with pytest.raises(ValueError):
        player.transport(mixer_pb2.TRANSPORT_ACTION_SEEK, 1601)
    with pytest.raises(ValueError):
        player.transport(mixer_pb2.TRANSPORT_ACTION_CUE, -1)
    with pytest.raises(ValueError):
        player.set_end(9)
    player.transport(mixer_pb2.TRANSPORT_ACTION_SEEK, 1600)  # the very end: its last frame
    assert await numbers(player, 1) == [39]
    await player.close()
