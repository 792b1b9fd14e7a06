"""FLV audio/video tag bodies (as RTMP carries them) to decoded PyAV frames.

Video: H.264 only (FLV codec id 7): the AVC sequence header is the decoder's `avcC` extradata,
each NALU packet is length-prefixed NAL units with a composition-time offset. Audio: AAC only
(sound format 10): the AudioSpecificConfig, then raw AAC frames. Anything else (Sorenson, VP6,
MP3, Speex, Enhanced-RTMP HEVC/AV1...) ends the contribution with a clear reason instead of a
picture that never comes. Runs in a worker thread: PyAV releases the GIL while decoding.
"""

from __future__ import annotations

from fractions import Fraction

import av

MILLISECONDS = Fraction(1, 1000)
FLV_AVC = 7
FLV_AAC = 10
SEQUENCE_HEADER, CODED = 0, 1


class UnsupportedMedia(ValueError):
    """The publisher sends a codec this ingest does not decode; the message says which."""


class FlvDecoder:
    """Decoders for one publish: H.264 video and AAC audio, created from their headers."""

    def __init__(self) -> None:
        self._video: av.VideoCodecContext | None = None
        self._audio: av.AudioCodecContext | None = None
        self.decode_errors = 0

    @property
    def has_video(self) -> bool:
        return self._video is not None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def video(self, timestamp_ms: int, body: bytes) -> list[av.VideoFrame]:
        if len(body) < 5:
            return []
        if body[0] & 0x80:
            raise UnsupportedMedia(
                "Enhanced RTMP video (HEVC/AV1/VP9) is not supported: send H.264"
            )
        codec = body[0] & 0x0F
        if codec != FLV_AVC:
            raise UnsupportedMedia(f"FLV video codec {codec} is not supported: send H.264")
        kind = body[1]
        if kind == SEQUENCE_HEADER:
            context = av.CodecContext.create("h264", "r")
            assert isinstance(context, av.VideoCodecContext)
            context.extradata = body[5:]
            self._video = context
            return []
        if kind != CODED or self._video is None:
            return []  # end of sequence, or frames before the header: nothing to decode yet
        cts = int.from_bytes(body[2:5], "big", signed=True)
        packet = av.Packet(body[5:])
        packet.dts, packet.pts, packet.time_base = timestamp_ms, timestamp_ms + cts, MILLISECONDS
        return [self._stamp(f) for f in self._decode(self._video, packet)]  # type: ignore[misc]

    def audio(self, timestamp_ms: int, body: bytes) -> list[av.AudioFrame]:
        if len(body) < 2:
            return []
        sound_format = body[0] >> 4
        if sound_format != FLV_AAC:
            raise UnsupportedMedia(f"FLV sound format {sound_format} is not supported: send AAC")
        if body[1] == SEQUENCE_HEADER:
            context = av.CodecContext.create("aac", "r")
            assert isinstance(context, av.AudioCodecContext)
            context.extradata = body[2:]
            self._audio = context
            return []
        if self._audio is None:
            return []
        packet = av.Packet(body[2:])
        packet.dts = packet.pts = timestamp_ms
        packet.time_base = MILLISECONDS
        return [self._stamp(f) for f in self._decode(self._audio, packet)]  # type: ignore[misc]

    def _decode(
        self, context: av.VideoCodecContext | av.AudioCodecContext, packet: av.Packet
    ) -> list[av.VideoFrame | av.AudioFrame]:
        try:
            return list(context.decode(packet))
        except av.FFmpegError:
            # A damaged packet costs one picture, not the contribution; measurements count it.
            self.decode_errors += 1
            return []

    @staticmethod
    def _stamp(frame: av.VideoFrame | av.AudioFrame) -> av.VideoFrame | av.AudioFrame:
        if frame.time_base is None:
            frame.time_base = MILLISECONDS
        return frame
