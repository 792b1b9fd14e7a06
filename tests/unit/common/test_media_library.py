"""What the media library takes: probing clips and stills with PyAV, media ids, the description
kept in an object's meta."""

from __future__ import annotations

import base64
import hashlib
import wave
from pathlib import Path

import pytest
from nats.js.api import ObjectInfo

from services.common import errors
from services.common.media_library import MediaError, MediaItem, check_media_id, probe
from tests.support.media_files import write_clip, write_still


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_h264_clip_with_aac_is_described_exactly(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "opener.mp4", seconds=1.0, width=320, height=180, fps=25)
    item = probe(path, "opener")
    assert (item.id, item.kind, item.filename) == ("opener", "clip", "opener.mp4")
    assert (item.duration_ms, item.width, item.height, item.fps) == (1000, 320, 180, 25.0)
    assert item.has_audio
    assert (item.size, item.sha256) == (path.stat().st_size, sha256_of(path))


def test_a_clip_in_matroska_with_opus_and_one_without_sound(tmp_path: Path) -> None:
    opus = probe(write_clip(tmp_path / "a.mkv", audio="libopus", fps=30), "a")
    assert (opus.kind, opus.fps, opus.has_audio) == ("clip", 30.0, True)
    assert 1000 <= opus.duration_ms <= 1040  # Opus pads its last frame
    silent = probe(write_clip(tmp_path / "b.mp4", audio=None, seconds=2.0), "b")
    assert (silent.duration_ms, silent.has_audio) == (2000, False)


@pytest.mark.parametrize("name", ["card.png", "card.jpg"])
def test_a_png_or_jpeg_is_a_still(tmp_path: Path, name: str) -> None:
    item = probe(write_still(tmp_path / name, width=64, height=36), "card")
    assert (item.kind, item.width, item.height) == ("still", 64, 36)
    assert (item.duration_ms, item.fps, item.has_audio) == (0, 0.0, False)


def refusal(path: Path, media_id: str = "x") -> MediaError:
    with pytest.raises(MediaError) as caught:
        probe(path, media_id)
    return caught.value


def test_what_is_not_a_clip_or_still_is_refused(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not a picture\n" * 20)
    assert "not a clip or still" in refusal(text).message
    with wave.open(str(tmp_path / "tone.wav"), "wb") as sound:
        sound.setnchannels(1)
        sound.setsampwidth(2)
        sound.setframerate(48000)
        sound.writeframes(b"\0\0" * 4800)
    assert "no video stream" in refusal(tmp_path / "tone.wav").message
    write_still(tmp_path / "card.bmp")
    assert "a still is PNG or JPEG, this is bmp" in refusal(tmp_path / "card.bmp").message
    assert "no such file" in refusal(tmp_path / "missing.mp4").message
    # One error, three readings: the platform's code, a ValueError, the field at fault.
    error = refusal(text)
    assert isinstance(error, ValueError)
    assert (error.code, error.field) == (errors.InvalidArgument.code, "file")


@pytest.mark.parametrize(
    "media_id", ["", "Opener", "-opener", "_a", "a" * 64, "clip/a", "a.b", "a b", "开场", "a\n"]
)
def test_bad_media_ids_are_refused(tmp_path: Path, media_id: str) -> None:
    path = write_still(tmp_path / "card.png")
    error = refusal(path, media_id)
    assert error.field == "id"
    with pytest.raises(MediaError):
        check_media_id(media_id)


@pytest.mark.parametrize("media_id", ["a", "0", "opener_2-b", "a" * 63])
def test_good_media_ids_pass(media_id: str) -> None:
    assert check_media_id(media_id) == media_id


def stored(item: MediaItem) -> ObjectInfo:
    """The meta the object store keeps for `item` (digest in its own notation)."""
    digest = base64.urlsafe_b64encode(bytes.fromhex(item.sha256)).decode()
    return ObjectInfo(
        name=item.id,
        bucket="media",
        nuid="n",
        size=item.size,
        digest=f"SHA-256={digest}",
        description=item.description(),
    )


def test_the_description_round_trips_through_the_object_meta(tmp_path: Path) -> None:
    item = probe(write_clip(tmp_path / "Opener.MP4"), "opener")
    assert MediaItem.from_info(stored(item)) == item
    # Size and digest are the store's, not copies in the description.
    assert "sha256" not in item.description() and "size" not in item.description()
    assert item.cache_name() == f"opener-{item.sha256[:12]}.mp4"
    odd = write_still(tmp_path / "card.png").rename(tmp_path / "card.final version")
    assert probe(odd, "card").cache_name().endswith(".bin")  # a suffix unfit for a file name


def test_an_object_without_a_media_description_is_named(tmp_path: Path) -> None:
    info = stored(probe(write_still(tmp_path / "card.png"), "card"))
    info.description = "a note"
    with pytest.raises(MediaError, match="'card' in the media library has no media description"):
        MediaItem.from_info(info)
