"""One output: its own queue, its own thread, its own state machine.

    idle -> connecting -> live -> retrying -> connecting -> ...
                    \\-> failed (rejected at once, or retrying for longer than fail_after_s)

A broken connection waits out a backoff of 1, 2, 4 ... retry_max_s seconds with ±20 % jitter, so
many outputs that lose one server do not come back in lockstep. Nothing an output does blocks
the encoder or another output: the encoder only ever puts into this output's bounded queue.
Secrets (stream key, passphrase) are masked in every state, reason and log line.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import structlog

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.common.telemetry import MASK, register_secret
from services.distribution import metrics
from services.distribution.encoder import Templates
from services.distribution.packet_queue import EncodedPacket, PacketQueue
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import Sink, SinkError, SinkRejected, make_sink

FIRST_BACKOFF_S = 1.0
JITTER = 0.2
QUEUE_POLL_S = 0.5
CONNECT_POLL_S = 0.05
# Time a relay needs beyond the network connect: ffmpeg reads a little input before it connects.
CONNECT_SLACK_S = 2.0

log = structlog.get_logger("distribution.output")

TemplateSource = Callable[[], Templates | None]
SinkFactory = Callable[[dist.OutputSpec, DistributionSettings], Sink]


def masked_url(spec: dist.OutputSpec) -> str:
    """The URL as operators may see it: key, passphrase and credentials replaced by ***."""
    if not spec.url:
        return ""
    parts = urlsplit(spec.url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rpartition("@")[2]
    query = urlencode(
        [
            (k, MASK if "pass" in k.lower() or "key" in k.lower() else v)
            for k, v in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    url = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if spec.stream_key:
        url = url.rstrip("/") + "/" + MASK
    return url


def backoff_delay(attempt: int, retry_max_s: float, rng: random.Random) -> float:
    """Seconds to wait before retry number `attempt` (1-based): 1, 2, 4 ... capped, jittered."""
    base = min(FIRST_BACKOFF_S * 2 ** (attempt - 1), retry_max_s)
    return base * (1 + rng.uniform(-JITTER, JITTER))


class Output:
    """An output of one production, run by its own worker thread while started."""

    def __init__(
        self,
        spec: dist.OutputSpec,
        settings: DistributionSettings,
        templates: TemplateSource,
        on_change: Callable[[Output], None],
        sink_factory: SinkFactory = make_sink,
        recent: Callable[[], Sequence[EncodedPacket]] = tuple,
    ) -> None:
        self.spec = spec
        self.settings = settings
        # An HLS ladder takes the ladder's renditions too (and needs room for them).
        self.ladder = frozenset(spec.ladder) if spec.kind == dist.OUTPUT_KIND_HLS else frozenset()
        scale = 1 + len(self.ladder)
        self.queue = PacketQueue(
            settings.output_queue_packets * scale,
            settings.output_queue_bytes * scale,
            frozenset({0}) | self.ladder,
        )
        self.status: dist.OutputStatus.ValueType = dist.OUTPUT_STATUS_IDLE
        self.reason = ""
        self.attempts = 0
        self.reconnects = 0
        self.bytes_sent = 0
        self.bitrate_kbps = 0.0
        self.media_seconds = 0.0
        self.since_us = time.time_ns() // 1000
        self.retry_in_s = 0.0
        self._templates = templates
        self._on_change = on_change
        self._sink_factory = sink_factory
        self._recent = recent  # the encoder's packets since its last keyframe
        self.refused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._labels = (spec.production, spec.id)
        self._dropped_reported = 0
        self._last_bytes = 0
        self._last_sample = time.monotonic()
        metrics.OUTPUT_STATE.labels(*self._labels).set(self.status)
        self.log = log.bind(production=spec.production, output=spec.id, url=masked_url(spec))
        for secret in (spec.stream_key, spec.passphrase):
            register_secret(secret)  # masked in every log line, the libraries' too

    @property
    def key(self) -> str:
        return f"{self.spec.production}.{self.spec.id}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def redact(self, text: str) -> str:
        for secret in (self.spec.stream_key, self.spec.passphrase):
            if secret:
                text = text.replace(secret, MASK)
        return text

    def state(self) -> dist.OutputState:
        return dist.OutputState(
            id=self.spec.id,
            production=self.spec.production,
            kind=self.spec.kind,
            status=self.status,
            url=masked_url(self.spec),
            reason=self.reason,
            enabled=self.spec.enabled,
            attempts=self.attempts,
            reconnects=self.reconnects,
            bytes_sent=self.bytes_sent,
            bitrate_kbps=self.bitrate_kbps,
            dropped_packets=self.queue.dropped,
            since_us=self.since_us,
            retry_in_s=self.retry_in_s,
            label=self.spec.label,
            media_seconds=self.media_seconds,
            station=self.spec.station,
        )

    # -- control (from the event loop) ----------------------------------------------------------

    def refuse(self, reason: str) -> None:
        """Never start (its stored secrets do not open): failed, with the reason."""
        self.refused = True
        self._set(dist.OUTPUT_STATUS_FAILED, reason)

    def start(self) -> None:
        if self.running or self.refused:
            return
        self._stop.clear()
        self.attempts = 0
        self._thread = threading.Thread(target=self._run, name=f"output-{self.key}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        self._stop.set()
        self.queue.close()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def sample(self) -> None:
        """Refresh bitrate, queue and drop metrics (called about once a second)."""
        now = time.monotonic()
        sent = self.bytes_sent
        elapsed = max(now - self._last_sample, 1e-3)
        self.bitrate_kbps = (sent - self._last_bytes) * 8 / elapsed / 1000
        self._last_bytes, self._last_sample = sent, now
        metrics.OUTPUT_BITRATE.labels(*self._labels).set(self.bitrate_kbps * 1000)
        metrics.OUTPUT_QUEUE.labels(*self._labels).set(len(self.queue))
        dropped = self.queue.dropped
        if dropped > self._dropped_reported:
            metrics.OUTPUT_DROPPED.labels(*self._labels).inc(dropped - self._dropped_reported)
            self._dropped_reported = dropped

    # -- the worker thread ----------------------------------------------------------------------

    def _set(
        self, status: dist.OutputStatus.ValueType, reason: str = "", retry_in_s: float = 0.0
    ) -> None:
        self.status = status
        self.reason = self.redact(reason)
        self.retry_in_s = retry_in_s
        self.since_us = time.time_ns() // 1000
        metrics.OUTPUT_STATE.labels(*self._labels).set(status)
        self.log.info(
            "output_state",
            status=dist.OutputStatus.Name(status),
            reason=self.reason,
            retry_in_s=round(retry_in_s, 2),
        )
        self._on_change(self)

    def _wait_templates(self) -> Templates | None:
        """The encoder's streams, once it runs every rendition this output takes."""
        while not self._stop.is_set():
            templates = self._templates()
            if templates is not None and all(
                h in templates.rungs or h >= templates.video.height for h in self.ladder
            ):
                return templates
            self._stop.wait(0.05)
        return None

    def _run(self) -> None:
        failures = 0
        failing_since: float | None = None
        while not self._stop.is_set():
            templates = self._wait_templates()
            if templates is None:
                break
            self.attempts += 1
            self._set(dist.OUTPUT_STATUS_CONNECTING)
            sink = self._sink_factory(self.spec, self.settings)
            try:
                sink.open(templates)
                self.media_seconds = 0.0
                # From the last keyframe sent, not the next one: a connection (a new owner's
                # after a takeover, a reconnection) starts pushing at once.
                self.queue.open(self._recent)
                self._pump(sink)
                break  # stopped
            except SinkRejected as exc:
                self._set(dist.OUTPUT_STATUS_FAILED, str(exc))
                return
            except Exception as exc:  # SinkError, or a bug: either way this output retries
                if not isinstance(exc, SinkError):
                    self.log.exception("output_crashed")
                reason = str(exc) or type(exc).__name__
                if self.status == dist.OUTPUT_STATUS_LIVE:
                    self.reconnects += 1
                    metrics.OUTPUT_RECONNECTS.labels(*self._labels).inc()
                    failures, failing_since = 0, None
            finally:
                self.queue.close()
                sink.close()
            failures += 1
            now = time.monotonic()
            failing_since = failing_since if failing_since is not None else now
            fail_after = self.settings.fail_after_s
            if fail_after and now - failing_since >= fail_after:
                self._set(
                    dist.OUTPUT_STATUS_FAILED,
                    f"gave up after retrying for {now - failing_since:.0f} s: {reason}",
                )
                return
            delay = backoff_delay(failures, self.settings.retry_max_s, self._rng)
            self._set(dist.OUTPUT_STATUS_RETRYING, reason, retry_in_s=delay)
            self._stop.wait(delay)
        self._set(dist.OUTPUT_STATUS_IDLE)

    def _pump(self, sink: Sink) -> None:
        """Feed the sink until stopped; live once the receiver has accepted the connection."""
        deadline = time.monotonic() + self.settings.connect_timeout_s + CONNECT_SLACK_S
        live = False
        while not self._stop.is_set():
            if not live:
                if sink.connected:
                    live = True
                    self._set(dist.OUTPUT_STATUS_LIVE)
                elif sink.awaits_caller:
                    sink.poll()  # a listener waits for its caller as long as it takes
                elif time.monotonic() > deadline:
                    sink.poll()
                    raise SinkError(f"not connected after {self.settings.connect_timeout_s:g} s")
            packet = self.queue.get(QUEUE_POLL_S if live else CONNECT_POLL_S)
            if packet is None:
                sink.poll()
                continue
            sent = sink.write(packet)
            self.media_seconds = sink.media_seconds
            if sent:
                self.bytes_sent += sent
                metrics.OUTPUT_BYTES.labels(*self._labels).inc(sent)
