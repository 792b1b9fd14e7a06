"""Every Prometheus metric of the monitoring service, declared once in `METRICS`.

The values are read from the health model, the program watchers and the alert book at scrape
time (a custom collector), so series of a source, production or output that went away vanish
with it instead of lingering at their last value. Labels are ids of things the platform
manages (services, instances, sources, productions, outputs), condition names and severities:
bounded sets, never free text.

Alongside them every service has `baycast_monitoring_ready`, `..._event_loop_lag_seconds` and
`..._build_info` from the common lifecycle, and prometheus-client's `process_*` metrics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.common.bus import Bus
from services.monitoring.alerts import CONDITIONS, SEVERITIES, AlertBook
from services.monitoring.confidence import BLACK, FROZEN, LOST, SILENT, Thresholds
from services.monitoring.health import QUALITY_SCORE, HealthModel
from services.monitoring.program_watcher import ProgramWatcher

GAUGE = "gauge"
COUNTER = "counter"


@dataclass(frozen=True)
class MetricSpec:
    name: str  # without the `_total` a counter gets on the wire
    kind: str
    help: str
    labels: tuple[str, ...] = ()


_SPECS = [
    # platform
    MetricSpec("sources_online", GAUGE, "Sources online now"),
    MetricSpec("sources_known", GAUGE, "Sources the monitoring service has heard of"),
    MetricSpec("alerts_firing", GAUGE, "Alerts active now, by severity", ("severity",)),
    MetricSpec(
        "alerts_active", GAUGE, "Alerts active now, by condition", ("condition", "severity")
    ),
    MetricSpec("alerts_raised", COUNTER, "Alerts raised since start", ("condition",)),
    MetricSpec(
        "alerts_on_duty",
        GAUGE,
        "1 on the one replica that publishes the alerts (the others judge but stay silent)",
    ),
    MetricSpec("nats_connected", GAUGE, "1 while the monitoring service is connected to NATS"),
    MetricSpec("nats_disconnects", COUNTER, "Times the monitoring service lost NATS"),
    MetricSpec(
        "loudness_target_lufs",
        GAUGE,
        "The platform's loudness target, for programs of productions without loudness control",
    ),
    MetricSpec("loudness_tolerance_lu", GAUGE, "Allowed short-term deviation from the target"),
    # service instances, from heartbeats
    MetricSpec("service_up", GAUGE, "1 while the instance beats", ("service", "service_instance")),
    MetricSpec(
        "service_ready", GAUGE, "1 while the instance is ready", ("service", "service_instance")
    ),
    MetricSpec(
        "service_cpu_ratio",
        GAUGE,
        "CPU used by the instance, in cores",
        ("service", "service_instance"),
    ),
    MetricSpec(
        "service_resident_memory_bytes",
        GAUGE,
        "Peak RSS of the instance",
        ("service", "service_instance"),
    ),
    MetricSpec(
        "service_event_loop_lag_seconds",
        GAUGE,
        "Event loop lag the instance reports",
        ("service", "service_instance"),
    ),
    MetricSpec(
        "service_uptime_seconds",
        GAUGE,
        "Since the instance started",
        ("service", "service_instance"),
    ),
    MetricSpec(
        "service_last_seen_seconds",
        GAUGE,
        "Since the last heartbeat",
        ("service", "service_instance"),
    ),
    # sources, from source state and stats
    MetricSpec("source_online", GAUGE, "1 while the source is online", ("source",)),
    MetricSpec("source_quality_score", GAUGE, "0 offline, 1 bad, 2 degraded, 3 good", ("source",)),
    MetricSpec("source_bitrate_bits_per_second", GAUGE, "Received bitrate", ("source",)),
    MetricSpec("source_frames_per_second", GAUGE, "Received frame rate", ("source",)),
    MetricSpec("source_loss_ratio", GAUGE, "Fraction of packets lost", ("source",)),
    MetricSpec("source_jitter_seconds", GAUGE, "Interarrival jitter", ("source",)),
    MetricSpec("source_rtt_seconds", GAUGE, "Round-trip time to the contributor", ("source",)),
    MetricSpec("source_audio_level_dbfs", GAUGE, "Audio level (full-scale sine = 0)", ("source",)),
    MetricSpec("source_black", GAUGE, "1 while ingest reports a black picture", ("source",)),
    MetricSpec("source_frozen", GAUGE, "1 while ingest reports a frozen picture", ("source",)),
    MetricSpec("source_silent", GAUGE, "1 while ingest reports silence", ("source",)),
    MetricSpec("source_packets_lost", COUNTER, "Packets lost this session", ("source",)),
    MetricSpec("source_frames_dropped", COUNTER, "Frames dropped this session", ("source",)),
    MetricSpec("source_decode_errors", COUNTER, "Decode errors this session", ("source",)),
    # productions' programs, from confidence monitoring
    MetricSpec("program_up", GAUGE, "1 while program frames arrive", ("production",)),
    MetricSpec("program_black", GAUGE, "1 while the program is black", ("production",)),
    MetricSpec("program_frozen", GAUGE, "1 while the program is frozen", ("production",)),
    MetricSpec("program_silent", GAUGE, "1 while the program is silent", ("production",)),
    MetricSpec(
        "program_loudness_lufs",
        GAUGE,
        "Program loudness (BS.1770), window: momentary, short_term or integrated",
        ("production", "window"),
    ),
    MetricSpec(
        "program_loudness_range_lu", GAUGE, "Loudness range (EBU Tech 3342)", ("production",)
    ),
    MetricSpec(
        "program_loudness_target_lufs",
        GAUGE,
        "The loudness target the program is judged against (its production's, EBU R128: -23)",
        ("production",),
    ),
    MetricSpec("program_true_peak_dbtp", GAUGE, "Largest true peak so far", ("production",)),
    MetricSpec("program_audio_level_dbfs", GAUGE, "Program audio level", ("production",)),
    MetricSpec("program_frames", COUNTER, "Program frames analysed", ("production", "kind")),
    MetricSpec(
        "program_frames_dropped",
        COUNTER,
        "Program frames lost, where: monitor (analysis behind), upstream (producer queue) "
        "or malformed (could not be read)",
        ("production", "where"),
    ),
    MetricSpec("program_queue_frames", GAUGE, "Frames waiting for analysis", ("production",)),
    MetricSpec(
        "program_last_frame_age_seconds", GAUGE, "Since the last program frame", ("production",)
    ),
    # outputs, from distribution's output state events
    MetricSpec(
        "output_state", GAUGE, "1 for the output's current state", ("production", "output", "state")
    ),
    MetricSpec(
        "output_retrying_seconds",
        GAUGE,
        "How long the output has been retrying",
        ("production", "output"),
    ),
    MetricSpec("output_failed", GAUGE, "1 while the output has failed", ("production", "output")),
    MetricSpec(
        "output_reconnects", COUNTER, "Times a live connection broke", ("production", "output")
    ),
    MetricSpec(
        "output_bitrate_bits_per_second",
        GAUGE,
        "Bitrate sent to the output",
        ("production", "output"),
    ),
]
METRICS: Mapping[str, MetricSpec] = {f"baycast_monitoring_{s.name}": s for s in _SPECS}


class Families:
    """One metric family per declared metric, filled for a scrape."""

    def __init__(self) -> None:
        self._families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {}
        for name, spec in METRICS.items():
            cls = CounterMetricFamily if spec.kind == COUNTER else GaugeMetricFamily
            self._families[name] = cls(name, spec.help, labels=list(spec.labels))

    def add(self, short: str, value: float, *labels: str) -> None:
        if math.isnan(value):
            return
        self._families[f"baycast_monitoring_{short}"].add_metric(list(labels), value)

    def add_finite(self, short: str, value: float, *labels: str) -> None:
        if math.isfinite(value):
            self.add(short, value, *labels)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class MonitoringCollector(Collector):
    def __init__(
        self,
        health: HealthModel,
        watchers: Mapping[str, ProgramWatcher],
        alerts: AlertBook,
        bus: Bus,
        thresholds: Thresholds,
        clock: Callable[[], float] = time.monotonic,
        on_duty: Callable[[], bool] = lambda: True,
    ) -> None:
        self.on_duty = on_duty
        self.health = health
        self.watchers = watchers
        self.alerts = alerts
        self.bus = bus
        self.thresholds = thresholds
        self.clock = clock

    def describe(self) -> Iterator[Metric]:
        return iter(Families())

    def collect(self) -> Iterator[Metric]:
        f = Families()
        now = self.clock()
        self._platform(f)
        self._instances(f, now)
        self._sources(f, now)
        self._programs(f, now)
        self._outputs(f, now)
        return iter(f)

    def _platform(self, f: Families) -> None:
        f.add("sources_online", self.health.sources_online())
        f.add("sources_known", len(self.health.sources))
        counts = self.alerts.counts()
        for severity in SEVERITIES:
            f.add(
                "alerts_firing", sum(n for (_, s), n in counts.items() if s == severity), severity
            )
        for condition, (_, severity) in CONDITIONS.items():
            f.add("alerts_active", counts.get((condition, severity), 0), condition, severity)
            f.add("alerts_raised", self.alerts.raised_total.get(condition, 0), condition)
        f.add("alerts_on_duty", 1 if self.on_duty() else 0)
        f.add("nats_connected", 1 if self.bus.connected else 0)
        f.add("nats_disconnects", self.bus.disconnects)
        f.add("loudness_target_lufs", self.thresholds.loudness_target_lufs)
        f.add("loudness_tolerance_lu", self.thresholds.loudness_tolerance_lu)

    def _instances(self, f: Families, now: float) -> None:
        for inst in self.health.instances.values():
            labels = (inst.service, inst.instance)
            beat = inst.beat
            f.add("service_up", 0 if inst.missing else 1, *labels)
            f.add("service_ready", 1 if beat.ready and not inst.missing else 0, *labels)
            f.add("service_cpu_ratio", inst.cpu_fraction, *labels)
            f.add("service_resident_memory_bytes", beat.rss_bytes, *labels)
            f.add("service_event_loop_lag_seconds", beat.loop_lag_ms / 1000, *labels)
            f.add(
                "service_uptime_seconds", max(0, beat.time_us - beat.started_at_us) / 1e6, *labels
            )
            f.add("service_last_seen_seconds", now - inst.last_seen, *labels)

    def _sources(self, f: Families, now: float) -> None:
        for source in self.health.sources.values():
            sid = source.source
            f.add("source_online", 1 if source.online else 0, sid)
            f.add("source_quality_score", QUALITY_SCORE[source.quality(now)], sid)
            s = source.stats
            if s is None or not source.online:
                continue
            f.add("source_bitrate_bits_per_second", s.bitrate_kbps * 1000, sid)
            f.add("source_frames_per_second", s.fps, sid)
            f.add("source_loss_ratio", s.loss_fraction, sid)
            f.add("source_jitter_seconds", s.jitter_ms / 1000, sid)
            f.add("source_rtt_seconds", s.rtt_ms / 1000, sid)
            f.add_finite("source_audio_level_dbfs", s.audio_level_dbfs, sid)
            f.add("source_black", int(s.black), sid)
            f.add("source_frozen", int(s.frozen), sid)
            f.add("source_silent", int(s.silent), sid)
            f.add("source_packets_lost", s.packets_lost, sid)
            f.add("source_frames_dropped", s.frames_dropped, sid)
            f.add("source_decode_errors", s.decode_errors, sid)

    def _programs(self, f: Families, now: float) -> None:
        for production, watcher in self.watchers.items():
            monitor = watcher.monitor
            reading = monitor.reading
            up = reading.video_frames > 0 and not monitor.active(LOST)
            f.add("program_up", int(up), production)
            f.add("program_black", int(monitor.active(BLACK)), production)
            f.add("program_frozen", int(monitor.active(FROZEN)), production)
            f.add("program_silent", int(monitor.active(SILENT)), production)
            meter = monitor.loudness
            for window, value in (
                ("momentary", meter.momentary),
                ("short_term", meter.short_term),
                ("integrated", meter.integrated),
            ):
                f.add_finite("program_loudness_lufs", value, production, window)
            f.add("program_loudness_range_lu", meter.loudness_range, production)
            f.add("program_loudness_target_lufs", watcher.loudness_target_lufs, production)
            f.add_finite("program_true_peak_dbtp", meter.true_peak_dbtp, production)
            f.add_finite("program_audio_level_dbfs", reading.audio_level_dbfs, production)
            f.add("program_frames", reading.video_frames, production, "video")
            f.add("program_frames", reading.audio_frames, production, "audio")
            f.add("program_frames_dropped", watcher.queue.dropped, production, "monitor")
            f.add("program_frames_dropped", watcher.upstream_dropped, production, "upstream")
            f.add("program_frames_dropped", watcher.malformed, production, "malformed")
            f.add("program_queue_frames", len(watcher.queue), production)
            if reading.last_video_at is not None:
                f.add("program_last_frame_age_seconds", now - reading.last_video_at, production)

    def _outputs(self, f: Families, now: float) -> None:
        for output in self.health.outputs.values():
            labels = (output.production, output.output)
            f.add("output_state", 1, *labels, output.state)
            f.add("output_retrying_seconds", output.retrying_for(now), *labels)
            f.add("output_failed", int(output.failed), *labels)
            f.add("output_reconnects", output.event.reconnects, *labels)
            f.add("output_bitrate_bits_per_second", output.event.bitrate_kbps * 1000, *labels)
