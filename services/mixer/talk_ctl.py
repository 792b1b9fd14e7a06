"""`baycast ctl talk`: talk to stations' returns from the command line (talkback, docs/adr/0012).

    baycast ctl talk qihang --to gz,sz --file cue.wav
    baycast ctl talk qihang --all --tone 1000 --seconds 3

It does what a director's talk button does: publishes the sound (a file, or a tone) over WHIP to
ingest's `/whip/talk/<operator>` with the operator's token, waits until the source
`talk_<operator>` is online, sends `MixerCommand.Talk(on)`, plays, then `Talk(off)` and ends the
WHIP session. Until the talk is on, the publisher sends silence, so a file plays from its start.
Ctrl-C ends the talk early, cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from services.common import errors, ice
from services.common.bus import subject
from services.common.ctl import Ctl, operator_tls, read_endpoints, run_verb
from services.common.gen.baycast.v1 import control_pb2, mixer_pb2
from services.common.handles import talk_source_id
from services.common.tls import http_connector

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms, what Opus sends
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
TONE_AMPLITUDE = 0.25  # -12 dBFS: clearly heard over a program ducked by 15 dB
DEFAULT_TONE_HZ = 1000.0
DEFAULT_TONE_SECONDS = 5.0
ONLINE_TIMEOUT_S = 20.0
HTTP_TIMEOUT_S = 10.0
TOKEN_ENV = "BAYCAST_OPERATOR_TOKEN"
# A paced track late by less than this catches up (a burst the receiver's jitter buffer takes in,
# as a station's tracks do); later than that (the machine was suspended), it starts over.
MAX_BEHIND_S = 1.0

Talk = mixer_pb2.MixerCommand.Talk


# -- what is sent ------------------------------------------------------------------------------


def _stereo_frame(samples: np.ndarray) -> av.AudioFrame:
    """An s16 stereo frame from mono int16 samples (what aiortc's Opus encoder takes)."""
    packed = np.repeat(samples, 2).reshape(1, -1)  # left, right, left, ...
    frame = av.AudioFrame.from_ndarray(packed, format="s16", layout="stereo")
    frame.sample_rate = SAMPLE_RATE
    return frame


class _Pacer:
    """Due times of consecutive 20 ms frames on the monotonic clock."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.samples = 0

    async def wait(self) -> None:
        now = time.monotonic()
        if self.start is None or now - (self.start + self.samples / SAMPLE_RATE) > MAX_BEHIND_S:
            self.start, self.samples = now, 0
        await asyncio.sleep(max(0.0, self.start + self.samples / SAMPLE_RATE - now))
        self.samples += FRAME_SAMPLES


class ToneTrack(MediaStreamTrack):
    """A sine at `hz`, in real time."""

    kind = "audio"

    def __init__(self, hz: float, amplitude: float = TONE_AMPLITUDE) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude
        self._pacer = _Pacer()
        self._sample = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._pacer.wait()
        t = (self._sample + np.arange(FRAME_SAMPLES)) / SAMPLE_RATE
        mono = np.rint(np.sin(2 * np.pi * self.hz * t) * self.amplitude * 32767).astype(np.int16)
        self._sample += FRAME_SAMPLES
        return _stereo_frame(mono)


class TalkTrack(MediaStreamTrack):
    """Silence until `play(program)`, then the program until it ends or `hush()`, then silence.

    One timeline whatever plays: every frame is stamped from one sample counter, so the RTP
    timestamps run on smoothly across the switches.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.finished = asyncio.Event()  # the program ran out (a file's end)
        self._program: MediaStreamTrack | None = None
        self._pacer = _Pacer()
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self._samples = 0

    def play(self, program: MediaStreamTrack) -> None:
        self._program = program

    def hush(self) -> None:
        program, self._program = self._program, None
        if program is not None:
            program.stop()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame: av.AudioFrame | None = None
        if self._program is not None:
            try:
                received = await self._program.recv()
                frame = received if isinstance(received, av.AudioFrame) else None
            except MediaStreamError:
                self._program = None
                self.finished.set()
        if frame is None:
            await self._pacer.wait()
            frame = _stereo_frame(self._silence)
        else:
            self._pacer.start = None  # the program paced itself; silence starts over after it
        frame.pts = self._samples
        frame.time_base = TIME_BASE
        self._samples += frame.samples
        return frame

    def stop(self) -> None:
        self.hush()
        super().stop()


def capture_device(spec: str) -> tuple[str, str]:
    """`[FORMAT:]DEVICE` of `--mic` as (FFmpeg input format, device): `default` is ALSA's
    default device, `alsa:hw:1`, `pulse:default`, or `lavfi:sine=frequency=1000` (FFmpeg's
    virtual input: a microphone for a machine without one)."""
    head, sep, tail = spec.partition(":")
    if sep and head in ("alsa", "pulse", "oss", "lavfi"):
        return head, tail or "default"
    return "alsa", spec or "default"


def program_track(args: argparse.Namespace) -> MediaStreamTrack:
    """The sound to play: a microphone or a file (aiortc's MediaPlayer, which decodes through
    FFmpeg), or a tone."""
    if args.mic is not None:
        fmt, device = capture_device(args.mic)
        if fmt not in av.formats_available:
            raise errors.InvalidArgument(f"this FFmpeg cannot capture from {fmt}", field="mic")
        try:
            microphone = MediaPlayer(device, format=fmt)
        except (av.FFmpegError, OSError) as exc:
            raise errors.Unavailable(f"cannot open the microphone {args.mic!r}: {exc}") from None
        if microphone.audio is None:
            raise errors.InvalidArgument(f"{args.mic} gives no sound", field="mic")
        return microphone.audio
    if not args.file:
        return ToneTrack(args.tone or DEFAULT_TONE_HZ)
    if not Path(args.file).is_file():
        raise errors.InvalidArgument(f"no such file {args.file!r}", field="file")
    player = MediaPlayer(args.file)
    if player.audio is None:
        raise errors.InvalidArgument(f"{args.file} has no audio", field="file")
    if player.video is not None:
        # The player decodes every stream it found into its tracks' queues: the picture of a
        # video file must be taken away, or its frames pile up for as long as the file plays.
        asyncio.get_running_loop().create_task(_drain(player.video), name="talk-drop-video")
        player.audio.on("ended", player.video.stop)  # the player stops once both have
    return player.audio


async def _drain(track: MediaStreamTrack) -> None:
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


# -- WHIP ----------------------------------------------------------------------------------------


class WhipTalk:
    """One WHIP session carrying a talk track: POST the offer, later DELETE the session."""

    def __init__(self, http: aiohttp.ClientSession, url: str, token: str) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.location = ""
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def publish(self, track: MediaStreamTrack) -> None:
        """Go on air; raises the error ingest answered (401, 403, 409 ...) by its code."""
        self.pc.addTransceiver(track, direction="sendonly")
        await self.pc.setLocalDescription(await self.pc.createOffer())
        headers = {**self._auth, "Content-Type": "application/sdp"}
        body = self.pc.localDescription.sdp.encode()
        try:
            async with self.http.post(self.url, data=body, headers=headers) as resp:
                text = await resp.text()
                if resp.status != 201:
                    raise _refusal(resp.status, text)
                self.location = urljoin(self.url, resp.headers["Location"])
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise errors.Unavailable(f"cannot reach ingest at {self.url}: {exc}") from None
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=text, type="answer"))

    async def close(self) -> None:
        location, self.location = self.location, ""
        if location:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with self.http.delete(location, headers=self._auth) as resp:
                    await resp.read()
        await self.pc.close()


def _refusal(status: int, text: str) -> errors.BaycastError:
    """The error an HTTP edge answered as `<CODE>: <message>` (baycast.common.web)."""
    code, _, message = text.strip().partition(": ")
    if not message:
        code, message = "", text.strip() or f"HTTP {status}"
    return errors.from_code(code, f"ingest answered {status}: {message}")


# -- the bus ---------------------------------------------------------------------------------


async def _mixer(ctl: Ctl, prod: str, talk: Talk, operator: str) -> mixer_pb2.MixerState:
    """Send a Talk command on the operator's behalf (retried through outages with one id)."""
    command = mixer_pb2.MixerCommand(talk=talk)
    return await ctl.command(
        subject("prod", prod, "mixer", "cmd"), command, mixer_pb2.MixerState, operator=operator
    )


async def _first(*waits: Awaitable[Any], timeout: float | None = None) -> None:
    """Until the first of `waits` finishes (or `timeout`); the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class SourceWatch:
    """Whether a source is online, from its state events (subscribe before it can change)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.online = asyncio.Event()
        self.subscription: Any = None

    async def start(self, ctl: Ctl) -> None:
        async def on_state(state: control_pb2.SourceState, _subject: str) -> None:
            if state.online:
                self.online.set()

        self.subscription = await ctl.bus.subscribe(
            subject("source", self.source, "state"), control_pb2.SourceState, on_state
        )

    async def stop(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(Exception):
                await self.subscription.unsubscribe()


# -- the verb ------------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> tuple[str, str, str]:
    """(operator, token, WHIP URL) from the flags, the environment and .baycast/endpoints.json."""
    endpoints = read_endpoints()
    operator = args.operator or str(endpoints.get("operator_id") or "")
    if not operator:
        raise errors.InvalidArgument(
            "give --operator (or operator_id in .baycast/endpoints.json)", field="operator"
        )
    token = args.token or os.environ.get(TOKEN_ENV) or str(endpoints.get("operator_token") or "")
    if not token:
        raise errors.InvalidArgument(
            f"give --token, set {TOKEN_ENV}, or operator_token in .baycast/endpoints.json",
            field="token",
        )
    ingest = args.ingest
    if not ingest:
        services = endpoints.get("services")
        entry = services.get("ingest") if isinstance(services, dict) else None
        ingest = entry.get("http") if isinstance(entry, dict) else ""
    if not ingest:
        raise errors.InvalidArgument("give --ingest (or run `baycast up`)", field="ingest")
    return operator, token, f"{str(ingest).rstrip('/')}/whip/talk/{operator}"


async def talk(ctl: Ctl, args: argparse.Namespace) -> int:
    """Publish, switch the talk on, play, switch it off, end the session.

    0 when the talk went on air and ended (by itself or by Ctrl-C), 130 when Ctrl-C came first.
    """
    operator, token, url = _settings(args)
    stations = [s for s in (args.to or "").split(",") if s]
    source = talk_source_id(operator)
    ice.configure(tuple(args.ice_host or ["127.0.0.1"]))
    seconds = args.seconds or (None if args.file or args.mic is not None else DEFAULT_TONE_SECONDS)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    track = TalkTrack()
    watch = SourceWatch(source)
    async with contextlib.AsyncExitStack() as stack:
        # Unwound in reverse: talk off, then the session ends, then the rest is released.
        program = program_track(args)
        stack.callback(program.stop)
        stack.callback(track.stop)
        loop.add_signal_handler(signal.SIGINT, stop.set)  # Ctrl-C ends the talk, cleanly
        stack.callback(loop.remove_signal_handler, signal.SIGINT)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S),
                connector=http_connector(operator_tls().ca_file),
            )
        )
        await watch.start(ctl)
        stack.push_async_callback(watch.stop)
        whip = WhipTalk(http, url, token)
        stack.push_async_callback(whip.close)
        await whip.publish(track)
        await _first(watch.online.wait(), stop.wait(), timeout=ONLINE_TIMEOUT_S)
        if stop.is_set():
            return 130
        if not watch.online.is_set():
            raise errors.Unavailable(f"{source} is not online after {ONLINE_TIMEOUT_S:g} s")
        on = Talk(source=source, stations=stations, all=args.all, on=True)
        await _mixer(ctl, args.prod, on, operator)
        off = Talk(source=source, stations=stations, all=args.all, on=False)
        stack.push_async_callback(_talk_off, ctl, args.prod, off, operator)
        track.play(program)
        heard = "every station" if args.all else ", ".join(stations)
        print(f"talking to {heard} of {args.prod} as {source}", flush=True)
        await _first(track.finished.wait(), stop.wait(), timeout=seconds)
        track.hush()
    return 0


async def _talk_off(ctl: Ctl, prod: str, off: Talk, operator: str) -> None:
    await _mixer(ctl, prod, off, operator)
    print("talk ended", flush=True)


Verb = Callable[[Ctl, argparse.Namespace], Awaitable[int]]


def register(verbs: argparse._SubParsersAction) -> None:
    p: argparse.ArgumentParser = verbs.add_parser(
        "talk",
        help="talk to stations' returns (talkback): a file or a tone, over WHIP",
        description=(
            "Publish a file's (or a tone's) audio as the operator's talk source over WHIP, "
            "switch talkback on for the stations, play, then switch it off. The token is "
            f"--token, else ${TOKEN_ENV}, else operator_token in .baycast/endpoints.json; the "
            "operator is --operator, else operator_id there; ingest is --ingest, else "
            "services.ingest.http there. The operator must be a director."
        ),
    )
    p.add_argument("prod", help="the production")
    to = p.add_mutually_exclusive_group(required=True)
    to.add_argument("--to", help="the stations that hear it, comma-separated: gz,sz")
    to.add_argument("--all", action="store_true", help="every station of the production")
    sound = p.add_mutually_exclusive_group()
    sound.add_argument("--file", help="an audio (or video) file to play")
    sound.add_argument(
        "--mic",
        nargs="?",
        const="default",
        metavar="[FORMAT:]DEVICE",
        help="talk live from a microphone until Ctrl-C (or --seconds): ALSA's default device, "
        "or alsa:hw:1, pulse:default, lavfi:sine=frequency=1000",
    )
    sound.add_argument(
        "--tone", type=float, metavar="HZ", help=f"a tone (default {DEFAULT_TONE_HZ:g} Hz)"
    )
    p.add_argument(
        "--seconds",
        type=float,
        help=f"how long (default: the file's length, or {DEFAULT_TONE_SECONDS:g} s of tone)",
    )
    p.add_argument("--token", help=f"the operator's token (else ${TOKEN_ENV}, then endpoints)")
    p.add_argument("--operator", help="the operator's id (else operator_id in endpoints.json)")
    p.add_argument("--ingest", help="ingest's HTTP URL (else services.ingest.http in endpoints)")
    p.add_argument(
        "--ice-host",
        action="append",
        default=[],
        help="local address for ICE (repeatable; default 127.0.0.1)",
    )
    verb: Verb = talk
    p.set_defaults(run=lambda args: run_verb(args, verb))
