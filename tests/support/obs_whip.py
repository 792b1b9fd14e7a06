"""Publish to a WHIP endpoint the way OBS Studio 30+ does: libdatachannel, H.264 and Opus.

    BAYCAST_STATION_TOKEN=T build/obs-venv/bin/python tests/support/obs_whip.py URL
        [--seconds 10] [--size 320x180] [--tone-hz 550] [--ice-host 127.0.0.1]

OBS's WHIP output (plugins/obs-webrtc) is a libdatachannel peer: an Opus track (mid 0, payload
111) and an H.264 track (mid 1, payload 96), both sendonly with one SSRC each, behind
libdatachannel's RTP packetizers (H.264 split on Annex B start codes, 1200-byte fragments), an
RTCP sender reporter and a NACK responder; libdatachannel's own ECDSA certificate; the offer
POSTed as soon as the local description is set, without waiting for ICE gathering; the answer
applied; DELETE of the Location on stop. This script does the same with libdatachannel's Python
binding (libdatachannel-py, Python ≥ 3.12, hence its own venv that `make setup` builds), encoding
with PyAV's libx264 (baseline profile, no B-frames, what WebRTC receivers decode) and libopus
(stereo, 20 ms). It imports nothing of baycast, only its sibling whip_http.py.

The picture is the one tests/support/gst_whip.py sends, drawn here in BT.601 studio range: SMPTE
100 % bars over the top five sixths, a white ball moving over black in the strip below; the tone
is a sine at 0.3 of full scale. Each step prints one JSON line on stdout; a failure prints a
reason on stderr and exits 1.
"""

from __future__ import annotations

import argparse
import secrets
import string
import sys
import threading
import time
from fractions import Fraction
from typing import Any

import av
import libdatachannel as rtc
import numpy as np
from whip_http import Failed, Resource, arguments, main, say, stop_event

AUDIO_MID, AUDIO_PT = "0", 111
VIDEO_MID, VIDEO_PT = "1", 96
MAX_VIDEO_FRAGMENT = 1200  # OBS's MAX_VIDEO_FRAGMENT_SIZE
SAMPLE_RATE, AUDIO_FRAME = 48_000, 960
# SMPTE 100 % bars, white to blue, as (Y, U, V) in BT.601 studio range.
BARS = (
    (235, 128, 128),
    (210, 16, 146),
    (170, 166, 16),
    (145, 54, 34),
    (106, 202, 222),
    (81, 90, 240),
    (41, 240, 110),
)
TIMEOUT_S = 15.0


class Picture:
    """The bars and the moving ball, as yuv420p frames."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.strip = height // 6
        top = height - self.strip
        column = (np.arange(width) * len(BARS)) // width
        yuv = np.array(BARS, dtype=np.uint8)
        self.y = np.full((height, width), 16, dtype=np.uint8)
        self.y[:top] = yuv[column, 0]
        self.u = np.full((height // 2, width // 2), 128, dtype=np.uint8)
        self.v = np.full((height // 2, width // 2), 128, dtype=np.uint8)
        self.u[: top // 2] = yuv[column[::2], 1]
        self.v[: top // 2] = yuv[column[::2], 2]

    def frame(self, n: int) -> av.VideoFrame:
        y = self.y.copy()
        radius = self.strip // 3
        span = self.width - 2 * radius
        x = radius + int(abs((n * 6) % (2 * span) - span))
        yy, xx = np.ogrid[: self.strip, : self.width]
        ball = (yy - self.strip // 2) ** 2 + (xx - x) ** 2 <= radius**2
        y[self.height - self.strip :][ball] = 235
        planes = np.concatenate([y.reshape(-1), self.u.reshape(-1), self.v.reshape(-1)])
        return av.VideoFrame.from_ndarray(
            planes.reshape(self.height * 3 // 2, self.width), format="yuv420p"
        )


class Publisher:
    def __init__(self, args: argparse.Namespace) -> None:
        self.resource = Resource(args.url, args.token)
        self.state = "new"
        self.connected = threading.Event()
        config = rtc.Configuration()
        if len(args.ice_host) > 1:
            raise Failed("libdatachannel binds one address: give --ice-host once")
        if args.ice_host:
            config.bind_address = args.ice_host[0]
        self.pc = rtc.PeerConnection(config)
        self.pc.on_state_change(self._on_state)
        alphabet = string.ascii_letters + string.digits
        stream = "".join(secrets.choice(alphabet) for _ in range(16))
        cname = "".join(secrets.choice(alphabet) for _ in range(16))
        ssrc = secrets.randbelow(2**32 - 3) + 1
        self.audio, self.audio_rtp = self._track(
            rtc.Description.Audio(AUDIO_MID, rtc.Description.Direction.SendOnly),
            ssrc,
            cname,
            stream,
            "audio",
        )
        self.video, self.video_rtp = self._track(
            rtc.Description.Video(VIDEO_MID, rtc.Description.Direction.SendOnly),
            ssrc + 1,
            cname,
            stream,
            "video",
        )

    def _track(
        self, description: Any, ssrc: int, cname: str, stream: str, kind: str
    ) -> tuple[rtc.Track, rtc.RtpPacketizationConfig]:
        packetizer: rtc.RtpPacketizer
        if kind == "audio":
            description.add_opus_codec(AUDIO_PT)
            config = rtc.RtpPacketizationConfig(ssrc, cname, AUDIO_PT, SAMPLE_RATE)
            packetizer = rtc.OpusRtpPacketizer(config)
        else:
            description.add_h264_codec(VIDEO_PT)
            config = rtc.RtpPacketizationConfig(ssrc, cname, VIDEO_PT, 90_000)
            packetizer = rtc.H264RtpPacketizer(
                rtc.NalUnit.Separator.StartSequence, config, MAX_VIDEO_FRAGMENT
            )
        description.add_ssrc(ssrc, cname, stream, f"{stream}-{kind}")
        track = self.pc.add_track(description)
        packetizer.add_to_chain(rtc.RtcpSrReporter(config))
        packetizer.add_to_chain(rtc.RtcpNackResponder())
        track.set_media_handler(packetizer)
        return track, config

    def _on_state(self, state: rtc.PeerConnection.State) -> None:
        self.state = state.name.lower()
        if state == rtc.PeerConnection.State.Connected:
            self.connected.set()

    def offer(self) -> str:
        # OBS posts the local description as soon as it is set, whatever has been gathered.
        self.pc.set_local_description()
        description = self.pc.local_description()
        if description is None:
            raise Failed("libdatachannel made no local description")
        return str(description)

    def apply(self, answer: str) -> None:
        self.pc.set_remote_description(rtc.Description(answer[answer.find("v=0") :], "answer"))

    def wait_connected(self) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not self.connected.wait(0.05):
            if self.state in ("failed", "closed"):
                raise Failed(f"the WebRTC connection {self.state} (ICE or DTLS)")
            if time.monotonic() > deadline:
                raise Failed(f"not connected after {TIMEOUT_S:.0f} s (state {self.state})")
        while not (self.audio.is_open() and self.video.is_open()):
            if time.monotonic() > deadline:
                raise Failed("the tracks did not open")
            time.sleep(0.01)

    def send(
        self, track: rtc.Track, config: rtc.RtpPacketizationConfig, data: bytes, t: float
    ) -> None:
        """One encoded frame at `t` seconds from the start, stamped the way OBS does it."""
        ticks = round(t * config.clock_rate)
        config.timestamp = (config.start_timestamp + ticks) % 2**32
        track.send(data)

    def close(self) -> None:
        self.pc.close()


def encoders(
    width: int, height: int, fps: int
) -> tuple[av.VideoCodecContext, av.AudioCodecContext]:
    video = av.CodecContext.create("libx264", "w")
    video.width, video.height, video.pix_fmt = width, height, "yuv420p"
    video.time_base, video.framerate = Fraction(1, fps), Fraction(fps)
    video.options = {
        "preset": "veryfast",
        "tune": "zerolatency",
        "profile": "baseline",
        "g": str(fps),
        "bf": "0",
    }
    audio = av.CodecContext.create("libopus", "w")
    audio.sample_rate, audio.layout, audio.format = SAMPLE_RATE, "stereo", "s16"
    audio.bit_rate = 64_000
    return video, audio


def publish(args: argparse.Namespace) -> None:
    width, height = (int(v) for v in args.size.split("x"))
    stop = stop_event()
    picture = Picture(width, height)
    video_encoder, audio_encoder = encoders(width, height, args.fps)
    publisher = Publisher(args)
    try:
        with publisher.resource.deleted_after():
            offer = publisher.offer()
            say("offered", offer=offer)
            publisher.apply(publisher.resource.post(offer))
            started = time.monotonic()
            publisher.wait_connected()
            say("connected", after_s=round(time.monotonic() - started, 3))
            sent = stream(publisher, picture, (video_encoder, audio_encoder), args, stop)
            say("sent", **sent)
    finally:
        publisher.close()


def stream(
    publisher: Publisher,
    picture: Picture,
    coders: tuple[av.VideoCodecContext, av.AudioCodecContext],
    args: argparse.Namespace,
    stop: threading.Event,
) -> dict[str, int]:
    """Encode and send, paced in 20 ms ticks (an Opus frame each, a picture every other one),
    until `--seconds` pass or `stop` is set; what was sent."""
    video_encoder, audio_encoder = coders
    sent = {"video_frames": 0, "audio_frames": 0, "bytes": 0}
    begin = time.monotonic()
    tick = 0
    deadline = begin + args.seconds
    while not stop.is_set() and (args.seconds <= 0 or time.monotonic() < deadline):
        t = tick * AUDIO_FRAME / SAMPLE_RATE
        phase = np.arange(tick * AUDIO_FRAME, (tick + 1) * AUDIO_FRAME) / SAMPLE_RATE
        tone = (0.3 * 32767 * np.sin(2 * np.pi * args.tone_hz * phase)).astype(np.int16)
        sound = av.AudioFrame.from_ndarray(
            np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo"
        )
        sound.sample_rate, sound.pts = SAMPLE_RATE, tick * AUDIO_FRAME
        for packet in audio_encoder.encode(sound):
            publisher.send(publisher.audio, publisher.audio_rtp, bytes(packet), t)
            sent["audio_frames"] += 1
            sent["bytes"] += packet.size
        if tick % 2 == 0:
            n = tick // 2
            image = picture.frame(n)
            image.pts = n
            for packet in video_encoder.encode(image):
                publisher.send(publisher.video, publisher.video_rtp, bytes(packet), n / args.fps)
                sent["video_frames"] += 1
                sent["bytes"] += packet.size
        tick += 1
        stop.wait(max(0.0, begin + tick * 0.02 - time.monotonic()))
        if publisher.state in ("failed", "closed", "disconnected"):
            raise Failed(f"the WebRTC connection went {publisher.state}")
    return sent


def parser() -> argparse.ArgumentParser:
    options = arguments(__doc__.split("\n")[0], tone_hz=550.0)
    options.prog = "obs_whip"
    return options


if __name__ == "__main__":
    sys.exit(main(parser(), publish))
