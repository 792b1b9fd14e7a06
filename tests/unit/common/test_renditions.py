"""One validator for what any producer's Media.Subscribe may be asked for."""

from __future__ import annotations

import pytest

from services.common.gen.baycast.v1 import media_pb2
from services.common.renditions import MAX_HEIGHT, MAX_WIDTH, rendition_problem

I420, RGBA = media_pb2.PIXEL_FORMAT_I420, media_pb2.PIXEL_FORMAT_RGBA


@pytest.mark.parametrize(
    ("rendition", "reason"),
    [
        (media_pb2.Rendition(width=320), "together"),
        (media_pb2.Rendition(height=180), "together"),
        (media_pb2.Rendition(width=321, height=180), "even"),
        (media_pb2.Rendition(width=MAX_WIDTH + 2, height=MAX_HEIGHT), "at most 3840x2160"),
        (media_pb2.Rendition(width=MAX_WIDTH, height=MAX_HEIGHT + 2), "at most 3840x2160"),
        (media_pb2.Rendition(fps=121), "fps"),
        (media_pb2.Rendition(pixel_format=99), "unknown pixel format"),  # type: ignore[arg-type]
        (media_pb2.Rendition(audio_channels=6), "audio_channels"),
        (media_pb2.Rendition(audio_sample_rate=1000), "audio_sample_rate"),
        (media_pb2.Rendition(no_video=True, no_audio=True), "nothing to send"),
    ],
)
def test_renditions_no_producer_serves_are_refused_with_the_reason(
    rendition: media_pb2.Rendition, reason: str
) -> None:
    assert reason in rendition_problem(rendition)


def test_a_producer_names_the_pixel_formats_it_makes() -> None:
    assert rendition_problem(media_pb2.Rendition(pixel_format=RGBA), (I420,)) == (
        "this producer serves PIXEL_FORMAT_I420 only"
    )
    assert rendition_problem(media_pb2.Rendition(pixel_format=I420), (RGBA,)) == (
        "this producer serves PIXEL_FORMAT_RGBA only"
    )
    assert rendition_problem(media_pb2.Rendition(), (RGBA,)) == ""  # as the producer has it


def test_renditions_that_can_be_served() -> None:
    assert rendition_problem(media_pb2.Rendition()) == ""
    assert rendition_problem(media_pb2.Rendition(width=320, height=180, fps=10)) == ""
    uhd = media_pb2.Rendition(width=MAX_WIDTH, height=MAX_HEIGHT, fps=120, pixel_format=I420)
    assert rendition_problem(uhd, (I420,)) == ""
    sound = media_pb2.Rendition(no_video=True, audio_sample_rate=48_000, audio_channels=1)
    assert rendition_problem(sound) == ""
