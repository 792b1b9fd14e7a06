"""Where an output's packets go: one small interface, one class per kind, a factory.

A sink is opened per connection attempt, fed packets in the encoder's timing, and closed. It
rebases timestamps so each connection starts at zero on a keyframe (the files of one recording
connection continue its timeline, so they play back to back).
`SinkError` is a failure worth retrying (refused, reset, timed out); `SinkRejected` is one that
will not get better by retrying (the server refused the application or key, the URL is wrong).

All blocking I/O happens in the output's own thread.

Secrets stay off the relay's command line (where `ps` shows them): an SRT passphrase, and an
RTMP(S) push's application and stream key, reach the child `ffmpeg` as an output preset
(`-fpre /dev/fd/N`), a pipe it reads `key=value` lines from and applies as the output's protocol
options, the same as `-passphrase` or `-rtmp_playpath` would. Only the pipe's number is in its
argv (an RTMP target is `rtmp://host:port` there); the pipe is empty once read and never touches
a disk. (FFmpeg 7's `-/opt file` does the same; Debian's 5.1 does not have it, and the SRT URL's
`passphrase=` query would show.) The relay's environment holds none of the service's own
settings either (`relay_environment`): the NATS credentials and shared secrets stay in the
service.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
import termios
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode, urlsplit

import av
from av.container import OutputContainer

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.encoder import Templates
from services.distribution.packet_queue import EncodedPacket
from services.distribution.settings import DistributionSettings

# What ffmpeg says when trying again later may work, and when it will not (checked in order).
TRANSIENT_WORDS = (
    "connection refused",
    "connection reset",
    "broken pipe",
    "timed out",
    "timeout",
    "network is unreachable",
    "no route to host",
    "end of file",
)
RTMP_REJECTED_WORDS = (
    "input/output error",  # nginx-rtmp and most platforms: application or stream key refused
    "server error",
    "unauthorized",
    "forbidden",
    "not found",
    "failed to resolve",
    "invalid argument",
    "certificate",
)
# libsrt says "Input/output error" for a listener that is not there as well: not a refusal.
SRT_REJECTED_WORDS = ("reject", "passphrase", "failed to resolve", "invalid argument")
CLOSE_GRACE_S = 3.0
SRT_LATENCY_US = 120_000
SRT_PAYLOAD = 1316  # 7 TS packets: what fits a UDP datagram on any path
# A listening relay reads its input up to where it starts waiting for the caller: more than this
# waiting unread in its pipe means it is waiting, so packets are held back (dropped) instead of
# piling up as stale media the caller would get first, or blocking this thread on a full pipe.
LISTEN_BACKLOG_BYTES = 16 * 1024
RELAY_PIPE_BYTES = 1024 * 1024  # room for a keyframe above the backlog: a write never blocks
RESUME_STEP = Fraction(1, 50)  # the gap left between the last packet before a hold and the next
# Variables a relay does not inherit: the service's settings and anything named like a secret.
RELAY_ENV_DROPPED_PREFIXES = ("BAYCAST_",)
RELAY_ENV_DROPPED_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSPHRASE", "KEY", "CREDENTIAL")
HLS_PLAYLIST = "index.m3u8"
LADDER_PLAYLIST = "stream_%v.m3u8"  # one media playlist per rendition, under the master


class SinkError(Exception):
    """A failure worth retrying."""


class SinkRejected(SinkError):
    """A failure retrying will not fix (rejected URL, application, key or passphrase)."""


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def relay_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a relay runs with: the service's own, less its settings and secrets."""
    env = dict(os.environ if environ is None else environ)
    return {
        name: value
        for name, value in env.items()
        if not name.startswith(RELAY_ENV_DROPPED_PREFIXES)
        and not any(word in name.upper() for word in RELAY_ENV_DROPPED_WORDS)
    }


class Sink(ABC):
    """Packets in, bytes out somewhere; one instance per connection attempt."""

    @abstractmethod
    def open(self, templates: Templates) -> None: ...

    @abstractmethod
    def write(self, packet: EncodedPacket) -> int:
        """Mux one packet; return the bytes it carried (0 if it was skipped)."""

    @abstractmethod
    def close(self) -> None: ...

    media_seconds: float = 0.0  # media time muxed since open()

    @property
    def connected(self) -> bool:
        """Whether the receiver has accepted us (a local file: at once)."""
        return True

    @property
    def awaits_caller(self) -> bool:
        """True while the receiver is to call us (SRT listener): no connect deadline then."""
        return False

    def poll(self) -> None:  # noqa: B027 (most sinks have nothing to check)
        """Raise SinkError if the sink broke while no packet was written."""


class ContainerSink(Sink):
    """Muxes into one PyAV output container; subclasses say which and where."""

    def __init__(self) -> None:
        self.container: OutputContainer | None = None
        # rendition (0: the main encode, else a ladder height) -> its (video, audio) streams
        self._streams: dict[int, tuple[Any, Any]] = {}
        self._renditions: list[int] = [0]
        self._origin: Fraction | None = None
        self._first: Fraction | None = None
        self.media_seconds = 0.0
        self._templates: Templates | None = None

    @abstractmethod
    def _open_container(self) -> OutputContainer: ...

    def _choose_renditions(self, templates: Templates) -> list[int]:
        return [0]

    def open(self, templates: Templates) -> None:
        self._templates = templates
        self._renditions = self._choose_renditions(templates)
        self._origin = None
        self._start_container()

    def _start_container(self) -> None:
        templates = self._templates
        assert templates is not None
        self.container = self._open_container()
        self._streams = {}
        for rung in self._renditions:
            video = templates.video if rung == 0 else templates.rungs[rung]
            self._streams[rung] = (
                self.container.add_stream_from_template(video),
                self.container.add_stream_from_template(templates.audio),
            )
        try:
            self.container.start_encoding()  # writes the header
        except OSError as exc:
            raise SinkError(_describe(exc)) from exc

    def _mux(self, packet: EncodedPacket) -> int:
        assert self.container is not None
        if packet.video and packet.rung not in self._streams:
            return 0
        at = packet.pts * packet.time_base
        if self._origin is None:
            self._origin = at
        if self._first is None:
            self._first = at
        self.media_seconds = max(self.media_seconds, float(at - self._first))
        offset = int(self._origin / packet.time_base)
        pts = packet.pts - offset
        if pts < 0:
            return 0  # audio from just before the first keyframe
        if packet.video:
            targets = [self._streams[packet.rung][0]]
        else:  # each rendition of a ladder carries the same sound
            targets = [audio for _, audio in self._streams.values()]
        for stream in targets:
            out = av.Packet(packet.data)
            out.pts = pts
            out.dts = packet.dts - offset
            out.time_base = packet.time_base
            out.is_keyframe = packet.keyframe
            out.stream = stream
            try:
                self.container.mux(out)
            except OSError as exc:
                raise SinkError(_describe(exc)) from exc
        return len(packet.data) * len(targets)

    def write(self, packet: EncodedPacket) -> int:
        return self._mux(packet)

    def close(self) -> None:
        container, self.container = self.container, None
        if container is not None:
            with contextlib.suppress(Exception):
                container.close()


class RelaySink(ContainerSink):
    """A network push (RTMP, RTMPS, SRT) through a child Debian `ffmpeg -c copy`.

    We mux into its stdin; it owns the socket. Why a process and not PyAV's own rtmp output:
    PyAV connects and writes the header holding the GIL (an unreachable host would freeze the
    whole service for the TCP timeout) and sets no I/O timeout on outputs (a hung receiver would
    hang the write forever). The child times out by itself (`-rw_timeout`), can be killed, and
    its network stack lives outside the encoder's process. PyAV has no SRT at all.

    `connected` turns true when ffmpeg reports progress, i.e. after the receiver accepted the
    connection and the header went out.
    """

    def __init__(
        self,
        target: str,
        muxer: str,
        ffmpeg: str,
        rw_timeout_s: float,
        rejected_words: tuple[str, ...],
        protocol_options: dict[str, str] | None = None,
        *,
        secret_options: dict[str, str] | None = None,
        listener: bool = False,
        keyframe_wanted: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.target = target
        self.rejected_words = rejected_words
        self.protocol_options = protocol_options or {}
        # Protocol options that must not show in `ps` (a passphrase): read from a pipe.
        self.secret_options = secret_options or {}
        self.listener = listener
        # Asked for a keyframe when a receiver starts (a shared encoding that can make one).
        self.keyframe_wanted = keyframe_wanted
        self.muxer = muxer
        self.ffmpeg = ffmpeg
        self.rw_timeout_s = rw_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._connected = threading.Event()
        self._progress: threading.Thread | None = None
        self._holding = False  # packets dropped while a listener waited: resume on a keyframe
        self._resumed_at: Fraction | None = None
        self._last_at: Fraction | None = None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def awaits_caller(self) -> bool:
        return self.listener and not self.connected

    def open(self, templates: Templates) -> None:
        super().open(templates)
        self._want_keyframe()

    def _want_keyframe(self) -> None:
        if self.keyframe_wanted is not None:
            self.keyframe_wanted()

    def _secret_pipe(self) -> int | None:
        """A pipe holding the secret options as a preset file, its read end for the child."""
        if not self.secret_options:
            return None
        if any(c in "\r\n" for item in self.secret_options.items() for c in "".join(item)):
            # A line break would start another option: nothing the validation lets through.
            raise SinkRejected("a secret option holds a line break")
        text = "".join(f"{name}={value}\n" for name, value in self.secret_options.items())
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, text.encode())  # a few dozen bytes: never more than a pipe holds
        finally:
            os.close(write_end)
        return read_end

    def _open_container(self) -> OutputContainer:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        secrets_fd = self._secret_pipe()
        preset = ["-fpre", f"/dev/fd/{secrets_fd}"] if secrets_fd is not None else []
        argv = [
            self.ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-progress",
            "pipe:1",
            "-stats_period",
            "0.2",
            "-probesize",
            "65536",
            "-analyzeduration",
            "300000",
            "-f",
            self.muxer,
            "-i",
            "pipe:0",
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            self.muxer,
            "-rw_timeout",
            str(int(self.rw_timeout_s * 1_000_000)),
            *(arg for name, value in self.protocol_options.items() for arg in (f"-{name}", value)),
            *preset,
            self.target,
        ]
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                pass_fds=(secrets_fd,) if secrets_fd is not None else (),
                env=relay_environment(),
            )
        except OSError as exc:
            raise SinkRejected(f"cannot run {self.ffmpeg}: {exc}") from exc
        finally:
            if secrets_fd is not None:
                os.close(secrets_fd)
        assert self.proc.stdin is not None
        if self.listener:
            with contextlib.suppress(OSError):  # above the system's pipe limit: the default
                fcntl.fcntl(self.proc.stdin.fileno(), fcntl.F_SETPIPE_SZ, RELAY_PIPE_BYTES)
        self._progress = threading.Thread(
            target=self._read_progress, args=(self.proc,), name="relay-progress", daemon=True
        )
        self._progress.start()
        assert self.proc.stdin is not None
        return av.open(self.proc.stdin, "w", format=self.muxer)

    def _read_progress(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(b"progress=") and not self._connected.is_set():
                self._connected.set()
                if self.listener:
                    self._want_keyframe()  # the caller is in: start it on a fresh picture

    def ffmpeg_error(self) -> str:
        """What ffmpeg said before it exited (last lines, for the output's reason)."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace").replace(self.target, "<url>")
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return " | ".join(lines[-3:])

    def failure(self, fallback: str) -> SinkError:
        """Why the relay stopped, classified: a refusal before connecting is final."""
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=2)
        reason = self.ffmpeg_error() or fallback
        lowered = reason.lower()
        if self.connected or any(word in lowered for word in TRANSIENT_WORDS):
            return SinkError(reason)
        if any(word in lowered for word in self.rejected_words):
            return SinkRejected(reason)
        return SinkError(reason)

    def poll(self) -> None:
        """Raise if ffmpeg has exited (called while waiting for packets or the connection)."""
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failure(f"ffmpeg exited with {self.proc.returncode}")

    def _pipe_backlog(self) -> int:
        """Bytes written to the relay that it has not read yet."""
        if self.proc is None or self.proc.stdin is None:
            return 0
        buf = bytearray(4)
        fcntl.ioctl(self.proc.stdin.fileno(), termios.FIONREAD, buf)
        return int.from_bytes(buf, "little")

    def _hold(self, packet: EncodedPacket) -> bool:
        """Whether to drop `packet`: a listener waits for its caller, or has just got one and
        the picture must start again on a keyframe (with the timeline closed up over the gap,
        so the caller sees no jump in timestamps)."""
        if self.awaits_caller:
            # While it probes its input the relay reads everything at once; a backlog means it
            # has gone on to wait for the caller (or is slow for a moment: then this re-checks).
            if self._pipe_backlog() > LISTEN_BACKLOG_BYTES:
                self._holding = True
                return True
            return False
        at = packet.pts * packet.time_base
        if self._holding:
            if not packet.starts_picture:
                return True
            self._holding = False
            if self._origin is not None and self._last_at is not None:
                self._origin += at - self._last_at - RESUME_STEP
            self._resumed_at = at
        elif self._resumed_at is not None and at < self._resumed_at:
            return True  # sound from before the picture it resumed on
        return False

    def write(self, packet: EncodedPacket) -> int:
        self.poll()
        if self.listener and self._hold(packet):
            return 0
        try:
            sent = self._mux(packet)
            if sent and self.listener:
                at = packet.pts * packet.time_base
                self._last_at = at if self._last_at is None else max(self._last_at, at)
            return sent
        except SinkError as exc:
            raise self.failure(str(exc)) from exc
        except Exception as exc:  # the pipe broke inside PyAV's write callback
            raise self.failure(_describe(exc)) from exc

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            # The trailer goes down the pipe; a stuck child must not hold us past a few seconds.
            watchdog = threading.Timer(CLOSE_GRACE_S, proc.kill)
            watchdog.start()
            try:
                super().close()
                with contextlib.suppress(OSError):
                    if proc.stdin is not None:
                        proc.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=CLOSE_GRACE_S)
            finally:
                watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            # ffmpeg is gone, so its progress pipe ends: the reader stops at that end, and only
            # then is the pipe closed (closing it under a read in progress fails that read).
            if self._progress is not None:
                self._progress.join(timeout=2)
            if proc.stdout is not None and not (self._progress and self._progress.is_alive()):
                proc.stdout.close()
        else:
            super().close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


def srt_target(url: str, connect_timeout_s: float, listener: bool = False) -> str:
    """The relay's SRT URL: caller (dials `url`) or listener (waits on its host:port). The
    passphrase is never in it (see `srt_secrets`)."""
    parts = urlsplit(url)
    query: dict[str, str | int] = {
        "mode": "listener" if listener else "caller",
        "latency": SRT_LATENCY_US,
        "pkt_size": SRT_PAYLOAD,
    }
    if not listener:
        query["connect_timeout"] = int(connect_timeout_s * 1000)
    return f"srt://{parts.netloc}?{urlencode(query)}"


def srt_secrets(passphrase: str) -> dict[str, str]:
    """The SRT options that go to the relay through its preset pipe."""
    return {"passphrase": passphrase, "pbkeylen": "16"} if passphrase else {}


def srt_sink(
    url: str,
    passphrase: str,
    mode: dist.SrtMode.ValueType,
    settings: DistributionSettings,
    keyframe_wanted: Callable[[], None] | None = None,
    make: Callable[..., RelaySink] = RelaySink,
) -> RelaySink:
    """An SRT push through the relay, as caller or listener, with its passphrase off argv."""
    listener = mode == dist.SRT_MODE_LISTENER
    return make(
        srt_target(url, settings.connect_timeout_s, listener),
        "mpegts",
        settings.ffmpeg,
        settings.write_timeout_s,
        SRT_REJECTED_WORDS,
        secret_options=srt_secrets(passphrase),
        listener=listener,
        keyframe_wanted=keyframe_wanted,
    )


class HlsSink(ContainerSink):
    """A sliding HLS playlist with segments cut on the encoder's keyframes; with a ladder,
    `index.m3u8` is the master playlist over one media playlist per rendition."""

    def __init__(
        self, folder: Path, segment_s: float, list_size: int, ladder: tuple[int, ...] = ()
    ) -> None:
        super().__init__()
        self.folder = folder
        self.segment_s = segment_s
        self.list_size = list_size
        self.ladder = ladder

    def open(self, templates: Templates) -> None:
        # The muxer dates segments (EXT-X-PROGRAM-DATE-TIME) from the wall clock when it starts:
        # start it with the first keyframe, so the dates are those of the pictures.
        self.folder.mkdir(parents=True, exist_ok=True)
        self._templates = templates
        self._renditions = self._choose_renditions(templates)
        self._origin = None

    def write(self, packet: EncodedPacket) -> int:
        if self.container is None:
            if not (packet.video and packet.keyframe):
                return 0
            self._start_container()
        return self._mux(packet)

    def _choose_renditions(self, templates: Templates) -> list[int]:
        return [0, *sorted((h for h in set(self.ladder) if h in templates.rungs), reverse=True)]

    def _open_container(self) -> OutputContainer:
        self.folder.mkdir(parents=True, exist_ok=True)
        laddered = len(self._renditions) > 1
        playlist = self.folder / (LADDER_PLAYLIST if laddered else HLS_PLAYLIST)
        # temp_file makes each segment and playlist appear whole; append_list continues an
        # existing playlist's sequence after a reconnect or restart, marked as a discontinuity.
        # program_date_time: players (and monitoring) can map each segment to the wall clock.
        flags = "delete_segments+omit_endlist+independent_segments+temp_file+program_date_time"
        if (self.folder / HLS_PLAYLIST).exists():
            flags += "+append_list"
        options = {
            "hls_time": f"{self.segment_s:g}",
            "hls_list_size": str(self.list_size),
            "hls_flags": flags,
            "hls_segment_filename": str(
                self.folder / ("seg_%v_%06d.ts" if laddered else "seg_%06d.ts")
            ),
        }
        if laddered:
            options["master_pl_name"] = HLS_PLAYLIST
            options["var_stream_map"] = " ".join(
                f"v:{i},a:{i}" for i in range(len(self._renditions))
            )
        try:
            return av.open(str(playlist), "w", format="hls", options=options)
        except OSError as exc:
            raise SinkError(_describe(exc)) from exc


class RecordingSink(ContainerSink):
    """Files split by duration at keyframes; MPEG-TS or fragmented MP4, both readable after a
    crash (no index written at the end). Timestamps run on across files, so the files of one
    connection play back to back as one."""

    def __init__(
        self, folder: Path, stem: str, fmt: dist.RecordingFormat.ValueType, segment_s: float
    ) -> None:
        super().__init__()
        self.folder = folder
        self.stem = stem
        self.fmp4 = fmt == dist.RECORDING_FORMAT_FMP4
        self.segment_s = segment_s
        self.files: list[Path] = []
        self._file_origin: float | None = None
        self._file_pictures = 0  # video packets in the current file

    def _open_container(self) -> OutputContainer:
        self.folder.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = (
            self.folder
            / f"{self.stem}-{stamp}-{len(self.files):04d}.{'mp4' if self.fmp4 else 'ts'}"
        )
        self.files.append(path)
        # flush_packets: every packet (every fragment for MP4) reaches the file at once, so a
        # crash loses nothing that was muxed.
        try:
            if self.fmp4:
                return av.open(
                    str(path),
                    "w",
                    format="mp4",
                    options={
                        "movflags": "frag_keyframe+empty_moov+default_base_moof",
                        "flush_packets": "1",
                    },
                )
            return av.open(str(path), "w", format="mpegts", options={"flush_packets": "1"})
        except OSError as exc:
            raise SinkError(_describe(exc)) from exc

    def write(self, packet: EncodedPacket) -> int:
        if self._file_origin is None:
            self._file_origin = packet.seconds
        elif packet.starts_picture and packet.seconds - self._file_origin >= self.segment_s:
            self.close()
            self._start_container()
            self._file_origin = packet.seconds
        sent = self._mux(packet)
        if sent and packet.video:
            self._file_pictures += 1
        return sent

    def _start_container(self) -> None:
        self._file_pictures = 0
        super()._start_container()

    def close(self) -> None:
        """Close the current file; one that holds no picture (stopped before any) is removed."""
        had_container = self.container is not None
        super().close()
        if had_container and self._file_pictures == 0 and self.files:
            empty = self.files.pop()
            with contextlib.suppress(FileNotFoundError):
                empty.unlink()


def push_url(spec: dist.OutputSpec) -> str:
    """The URL an RTMP(S) output pushes to: the application URL plus the stream key."""
    if not spec.stream_key:
        return spec.url
    return spec.url.rstrip("/") + "/" + spec.stream_key


def rtmp_target(spec: dist.OutputSpec) -> tuple[str, dict[str, str]]:
    """The relay's RTMP(S) URL, scheme, host and port only, and the options that name the
    application and the stream (`rtmp_app`, `rtmp_playpath`), which go through the preset pipe.

    They are split as FFmpeg splits `push_url` itself: the application is the first segment of
    what follows the host, the stream everything after it (a query included). So the server sees
    the same `connect` (its `tcUrl` is `rtmp://host:port/<app>`) and `publish` either way."""
    url = push_url(spec)
    parts = urlsplit(url)
    rest = url.split("://", 1)[1][len(parts.netloc) :].lstrip("/")
    app, _, playpath = rest.partition("/")
    options = {"rtmp_app": app}
    if playpath:
        options["rtmp_playpath"] = playpath
    return f"{parts.scheme}://{parts.netloc}", options


def make_sink(spec: dist.OutputSpec, settings: DistributionSettings) -> Sink:
    """The sink for `spec`; refuses a kind it does not know."""
    data = Path(settings.data_dir)
    if spec.kind in (dist.OUTPUT_KIND_RTMP, dist.OUTPUT_KIND_RTMPS):
        # A small socket buffer: a slow receiver backs up into our queue (which drops to
        # keyframes) instead of into megabytes of kernel buffer that only add delay.
        options = {"send_buffer_size": str(settings.send_buffer_bytes)}
        if spec.kind == dist.OUTPUT_KIND_RTMPS and settings.outputs_tls_verify:
            options |= {"tls_verify": "1", "ca_file": settings.outputs_ca_file}
        target, secret_options = rtmp_target(spec)
        return RelaySink(
            target,
            "flv",
            settings.ffmpeg,
            settings.write_timeout_s,
            RTMP_REJECTED_WORDS,
            options,
            secret_options=secret_options,
        )
    if spec.kind == dist.OUTPUT_KIND_SRT:
        return srt_sink(spec.url, spec.passphrase, spec.srt_mode, settings)
    if spec.kind == dist.OUTPUT_KIND_HLS:
        return HlsSink(
            data / "hls" / spec.production,
            settings.hls_segment_s,
            settings.hls_list_size,
            tuple(spec.ladder),
        )
    if spec.kind == dist.OUTPUT_KIND_RECORDING:
        return RecordingSink(
            data / "recordings" / spec.production / spec.id,
            f"{spec.production}-{spec.id}",
            spec.recording_format,
            spec.segment_seconds or settings.recording_segment_s,
        )
    raise ValueError(f"unknown output kind {spec.kind}")
