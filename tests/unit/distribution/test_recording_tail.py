"""The tails of a stopped output: a recording's file closed before any picture reached it is
removed, not left without video; an HLS segment stopped a few pictures in is listed and plays."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.encoder import Templates
from services.distribution.packet_queue import EncodedPacket
from services.distribution.sinks import HlsSink, RecordingSink
from tests.support.media_files import open_media


def _encoded() -> tuple[Templates, list[EncodedPacket]]:
    """Real templates (x264 + AAC with global headers) and two seconds of 25 fps packets."""
    container = av.open(io.BytesIO(), "w", format="flv")
    video = container.add_stream("libx264", rate=25, options={"g": "25", "bf": "0"})
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    audio = container.add_stream("aac", rate=48_000, layout="stereo")
    container.start_encoding()
    packets = []
    frames: list[av.VideoFrame | None] = []
    for n in range(50):
        frame = av.VideoFrame.from_ndarray(np.full((96, 64), n, dtype=np.uint8), format="yuv420p")
        frame.pts, frame.time_base = n, Fraction(1, 25)
        frames.append(frame)
    for frame in [*frames, None]:  # None: flush what the encoder holds
        for p in video.encode(frame):
            packets.append(EncodedPacket(True, bytes(p), p.pts, p.dts, p.is_keyframe, p.time_base))
    return Templates(video, audio, {}), packets


def test_a_file_closed_before_any_picture_is_removed(tmp_path: Path) -> None:
    templates, packets = _encoded()
    sink = RecordingSink(tmp_path, "p-archive", dist.RECORDING_FORMAT_MPEGTS, 1.0)
    sink.open(templates)
    sink.close()  # stopped before the first keyframe arrived
    assert sink.files == [] and list(tmp_path.iterdir()) == []

    sink.open(templates)
    for packet in packets:
        sink.write(packet)
    sink.close()
    assert len(sink.files) == 2 and all(f.exists() for f in sink.files)  # split at 1 s
    for f in sink.files:
        with av.open(str(f)) as c:
            assert len(c.streams.video) == 1
            assert sum(1 for _ in c.decode(c.streams.video[0])) >= 20


def test_a_segment_stopped_two_pictures_in_is_listed_whole_and_decodes(tmp_path: Path) -> None:
    templates, packets = _encoded()
    sink = HlsSink(tmp_path, segment_s=1.0, list_size=5)
    sink.open(templates)
    # A second of pictures, the first keyframe after it (26: the segment's cut), one picture more.
    for packet in packets[:28]:
        sink.write(packet)
    sink.close()
    playlist = (tmp_path / "index.m3u8").read_text()
    listed = [line for line in playlist.splitlines() if line and not line.startswith("#")]
    assert listed == ["seg_000000.ts", "seg_000001.ts"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.m3u8", *listed]  # no .tmp left
    decoded = []
    for name in listed:
        with open_media(tmp_path / name) as c:
            decoded.append(sum(1 for _ in c.decode(c.streams.video[0])))
    assert decoded == [26, 2]
