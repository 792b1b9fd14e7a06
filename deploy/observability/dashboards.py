"""Builds the Grafana dashboards: `python deploy/observability/dashboards.py`.

The JSON files are generated so that every panel has the same datasource variable, grid layout
and units; the files are committed so Grafana (or a ConfigMap) can load them as they are, and a
test checks that they are up to date with this script. They exist once, in
`deploy/k8s/components/dashboards/dashboards/`: kustomize's dashboards component reads them there
(it reads no file outside its directory), the Helm chart through its `files/dashboards` link, and
`make k8s-check` fails on a second copy anywhere else.

Only metrics that exist are used: the monitoring service's `baycast_monitoring_*` gauges (built
from heartbeats, source stats, confidence monitoring and output events, so the dashboards do not
depend on other services' internal metric names), every service's common `baycast_<svc>_ready`
and `baycast_<svc>_event_loop_lag_seconds` (selected by name pattern), `process_*`, and
distribution's `baycast_distribution_hls_viewers` (viewers are counted nowhere else).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "k8s" / "components" / "dashboards" / "dashboards"
SCHEMA_VERSION = 39
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
WIDTH = 24


def _datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def _query_variable(name: str, query: str, *, multi: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": name,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"query": query, "refId": f"{name}-values"},
        "refresh": 2,
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "hide": 0,
        "sort": 1,
        "regex": "",
    }


class Layout:
    """Places panels left to right, wrapping at Grafana's 24 columns, and numbers them."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def _place(self, panel: dict[str, Any], w: int, h: int) -> dict[str, Any]:
        if self.x + w > WIDTH:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_height = max(self.row_height, h)
        self.panels.append(panel)
        return panel

    def row(self, title: str, *, repeat: str = "") -> None:
        if self.x:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        panel: dict[str, Any] = {"type": "row", "title": title, "collapsed": False, "panels": []}
        if repeat:
            panel["repeat"] = repeat
        self._place(panel, WIDTH, 1)
        self.x, self.y, self.row_height = 0, self.y + 1, 0

    def panel(
        self,
        kind: str,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        w: int = 8,
        h: int = 7,
        thresholds: list[tuple[float | None, str]] | None = None,
        mappings: list[dict[str, Any]] | None = None,
        description: str = "",
        decimals: int | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        steps = [
            {"value": value, "color": color}
            for value, color in (thresholds or [(None, "green"), (80, "red")])
        ]
        defaults: dict[str, Any] = {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "mappings": mappings or [],
            "color": {
                "mode": "thresholds" if kind in ("stat", "state-timeline") else "palette-classic"
            },
        }
        if decimals is not None:
            defaults["decimals"] = decimals
        if minimum is not None:
            defaults["min"] = minimum
        if maximum is not None:
            defaults["max"] = maximum
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": _options(kind),
            "targets": [
                {
                    "refId": chr(ord("A") + i),
                    "datasource": DATASOURCE,
                    "expr": expr,
                    "legendFormat": legend,
                }
                for i, (expr, legend) in enumerate(targets)
            ],
        }
        self._place(panel, w, h)


def _options(kind: str) -> dict[str, Any]:
    if kind == "stat":
        return {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        }
    if kind == "state-timeline":
        return {"showValue": "never", "mergeValues": True, "legend": {"showLegend": True}}
    if kind == "table":
        return {"showHeader": True}
    return {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }


BOOL_MAPPINGS = [
    {
        "type": "value",
        "options": {"0": {"text": "ok", "color": "green"}, "1": {"text": "ALARM", "color": "red"}},
    }
]
UP_MAPPINGS = [
    {
        "type": "value",
        "options": {"0": {"text": "down", "color": "red"}, "1": {"text": "up", "color": "green"}},
    }
]
ALARM = [(None, "green"), (1, "red")]
UP = [(None, "red"), (1, "green")]


def dashboard(
    uid: str, title: str, layout: Layout, variables: list[dict[str, Any]], tags: list[str]
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "tags": ["baycast", *tags],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["baycast"], "asDropdown": True, "title": "baycast"}
        ],
        "templating": {"list": [_datasource_variable(), *variables]},
        "panels": layout.panels,
    }


def platform_overview() -> dict[str, Any]:
    d = Layout()
    d.row("Now")
    d.panel(
        "stat",
        "Sources online",
        [("baycast_monitoring_sources_online", "online")],
        w=4,
        h=4,
        thresholds=[(None, "blue")],
    )
    d.panel(
        "stat",
        "Critical alerts",
        [('baycast_monitoring_alerts_firing{severity="critical"}', "critical")],
        w=4,
        h=4,
        thresholds=ALARM,
    )
    d.panel(
        "stat",
        "Warnings",
        [('baycast_monitoring_alerts_firing{severity="warning"}', "warning")],
        w=4,
        h=4,
        thresholds=[(None, "green"), (1, "orange")],
    )
    d.panel(
        "stat",
        "NATS (monitoring's view)",
        [("baycast_monitoring_nats_connected", "connected")],
        w=4,
        h=4,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.panel(
        "stat",
        "Programs on air",
        [("sum(baycast_monitoring_program_up)", "programs")],
        w=4,
        h=4,
        thresholds=[(None, "blue")],
    )
    d.panel(
        "stat",
        "Monitoring ready",
        [("baycast_monitoring_ready", "ready")],
        w=4,
        h=4,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.row("Services")
    d.panel(
        "state-timeline",
        "Service instances up (heartbeats)",
        [("baycast_monitoring_service_up", "{{service}}/{{service_instance}}")],
        w=12,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.panel(
        "state-timeline",
        "Service ready (own probes)",
        [('{__name__=~"baycast_.+_ready"}', "{{__name__}} {{instance}}")],
        w=12,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.row("Alerts and programs")
    d.panel(
        "timeseries",
        "Alerts active by condition",
        [("sum by (condition) (baycast_monitoring_alerts_active)", "{{condition}}")],
        w=12,
    )
    d.panel(
        "timeseries",
        "Alerts raised (per 5 min)",
        [
            (
                "sum by (condition) (increase(baycast_monitoring_alerts_raised_total[5m]))",
                "{{condition}}",
            )
        ],
        w=12,
    )
    d.panel(
        "timeseries",
        "Program short-term loudness",
        [
            ('baycast_monitoring_program_loudness_lufs{window="short_term"}', "{{production}}"),
            ("baycast_monitoring_program_loudness_target_lufs", "{{production}} target"),
        ],
        unit="lufs",
        w=12,
        minimum=-40,
        maximum=-10,
    )
    d.panel(
        "state-timeline",
        "Program black / frozen / silent",
        [
            ("baycast_monitoring_program_black", "{{production}} black"),
            ("baycast_monitoring_program_frozen", "{{production}} frozen"),
            ("baycast_monitoring_program_silent", "{{production}} silent"),
        ],
        w=12,
        thresholds=ALARM,
        mappings=BOOL_MAPPINGS,
    )
    return dashboard("baycast-overview", "baycast / Platform overview", d, [], ["overview"])


def sources() -> dict[str, Any]:
    d = Layout()
    sel = 'source=~"$source"'
    d.row("Summary")
    d.panel(
        "state-timeline",
        "Online",
        [(f"baycast_monitoring_source_online{{{sel}}}", "{{source}}")],
        w=12,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.panel(
        "state-timeline",
        "Quality (0 offline, 1 bad, 2 degraded, 3 good)",
        [(f"baycast_monitoring_source_quality_score{{{sel}}}", "{{source}}")],
        w=12,
        thresholds=[(None, "red"), (2, "orange"), (3, "green")],
    )
    d.row("$source", repeat="source")
    one = 'source="$source"'
    d.panel(
        "timeseries",
        "Bitrate",
        [(f"baycast_monitoring_source_bitrate_bits_per_second{{{one}}}", "bitrate")],
        unit="bps",
        w=4,
    )
    d.panel(
        "timeseries",
        "Frame rate",
        [(f"baycast_monitoring_source_frames_per_second{{{one}}}", "fps")],
        unit="short",
        w=4,
    )
    d.panel(
        "timeseries",
        "Packet loss",
        [(f"baycast_monitoring_source_loss_ratio{{{one}}}", "loss")],
        unit="percentunit",
        w=4,
    )
    d.panel(
        "timeseries",
        "Jitter",
        [(f"baycast_monitoring_source_jitter_seconds{{{one}}}", "jitter")],
        unit="s",
        w=4,
    )
    d.panel(
        "timeseries",
        "Round-trip time",
        [(f"baycast_monitoring_source_rtt_seconds{{{one}}}", "RTT")],
        unit="s",
        w=4,
    )
    d.panel(
        "timeseries",
        "Audio level",
        [(f"baycast_monitoring_source_audio_level_dbfs{{{one}}}", "level")],
        unit="dB",
        w=4,
        minimum=-70,
        maximum=0,
    )
    return dashboard(
        "baycast-sources",
        "baycast / Sources",
        d,
        [_query_variable("source", "label_values(baycast_monitoring_source_online, source)")],
        ["sources"],
    )


def program_and_outputs() -> dict[str, Any]:
    d = Layout()
    p = 'production=~"$production"'
    d.row("Loudness (EBU R128)")
    d.panel(
        "timeseries",
        "Loudness: momentary, short-term, integrated",
        [
            (f"baycast_monitoring_program_loudness_lufs{{{p}}}", "{{production}} {{window}}"),
            (f"baycast_monitoring_program_loudness_target_lufs{{{p}}}", "{{production}} target"),
        ],
        unit="lufs",
        w=12,
        h=8,
        minimum=-50,
        maximum=-5,
    )
    d.panel(
        "stat",
        "Integrated",
        [
            (
                f'baycast_monitoring_program_loudness_lufs{{{p},window="integrated"}}',
                "{{production}}",
            )
        ],
        unit="lufs",
        w=4,
        h=8,
        decimals=1,
        thresholds=[(None, "orange"), (-25, "green"), (-21, "orange")],
    )
    d.panel(
        "stat",
        "Loudness range",
        [(f"baycast_monitoring_program_loudness_range_lu{{{p}}}", "{{production}}")],
        unit="none",
        w=4,
        h=8,
        decimals=1,
        thresholds=[(None, "green"), (20, "orange")],
    )
    d.panel(
        "stat",
        "True peak",
        [(f"baycast_monitoring_program_true_peak_dbtp{{{p}}}", "{{production}}")],
        unit="dB",
        w=4,
        h=8,
        decimals=1,
        thresholds=[(None, "green"), (-1, "red")],
    )
    d.row("Picture and sound")
    d.panel(
        "state-timeline",
        "Program receiving",
        [(f"baycast_monitoring_program_up{{{p}}}", "{{production}}")],
        w=12,
        thresholds=UP,
        mappings=UP_MAPPINGS,
    )
    d.panel(
        "state-timeline",
        "Black / frozen / silent",
        [
            (f"baycast_monitoring_program_black{{{p}}}", "{{production}} black"),
            (f"baycast_monitoring_program_frozen{{{p}}}", "{{production}} frozen"),
            (f"baycast_monitoring_program_silent{{{p}}}", "{{production}} silent"),
        ],
        w=12,
        thresholds=ALARM,
        mappings=BOOL_MAPPINGS,
    )
    d.panel(
        "timeseries",
        "Program audio level",
        [(f"baycast_monitoring_program_audio_level_dbfs{{{p}}}", "{{production}}")],
        unit="dB",
        w=12,
        minimum=-70,
        maximum=0,
    )
    d.panel(
        "timeseries",
        "Frames analysed per second",
        [(f"rate(baycast_monitoring_program_frames_total{{{p}}}[1m])", "{{production}} {{kind}}")],
        unit="short",
        w=12,
    )
    d.row("Outputs")
    d.panel(
        "state-timeline",
        "Output state",
        [(f"baycast_monitoring_output_state{{{p}}} == 1", "{{production}}/{{output}} {{state}}")],
        w=12,
        thresholds=[(None, "blue")],
    )
    d.panel(
        "timeseries",
        "Retrying for",
        [(f"baycast_monitoring_output_retrying_seconds{{{p}}}", "{{production}}/{{output}}")],
        unit="s",
        w=6,
        thresholds=[(None, "green"), (60, "red")],
    )
    d.panel(
        "timeseries",
        "Reconnects (per 10 min)",
        [
            (
                f"increase(baycast_monitoring_output_reconnects_total{{{p}}}[10m])",
                "{{production}}/{{output}}",
            )
        ],
        w=6,
    )
    d.panel(
        "timeseries",
        "Output bitrate",
        [
            (
                f"baycast_monitoring_output_bitrate_bits_per_second{{{p}}}",
                "{{production}}/{{output}}",
            )
        ],
        unit="bps",
        w=12,
    )
    d.panel(
        "timeseries",
        "HLS viewers",
        [(f"baycast_distribution_hls_viewers{{{p}}}", "{{production}}")],
        description="Distinct HLS sessions in distribution's sliding window.",
        w=12,
    )
    return dashboard(
        "baycast-program",
        "baycast / Program and outputs",
        d,
        [_query_variable("production", "label_values(baycast_monitoring_program_up, production)")],
        ["program", "outputs"],
    )


def service_internals() -> dict[str, Any]:
    d = Layout()
    job = 'job=~"$job"'
    d.row("Processes")
    d.panel(
        "timeseries",
        "CPU (cores)",
        [(f"rate(process_cpu_seconds_total{{{job}}}[1m])", "{{job}} {{instance}}")],
        unit="short",
        w=12,
    )
    d.panel(
        "timeseries",
        "Resident memory",
        [(f"process_resident_memory_bytes{{{job}}}", "{{job}} {{instance}}")],
        unit="bytes",
        w=12,
    )
    d.panel(
        "timeseries",
        "Event loop lag (own metric)",
        [(f'{{__name__=~"baycast_.+_event_loop_lag_seconds",{job}}}', "{{job}} {{instance}}")],
        unit="s",
        w=12,
        thresholds=[(None, "green"), (0.1, "red")],
    )
    d.panel(
        "timeseries",
        "Event loop lag (heartbeats)",
        [("baycast_monitoring_service_event_loop_lag_seconds", "{{service}}/{{service_instance}}")],
        unit="s",
        w=12,
        thresholds=[(None, "green"), (0.1, "red")],
    )
    d.panel(
        "timeseries",
        "CPU per instance (heartbeats)",
        [("baycast_monitoring_service_cpu_ratio", "{{service}}/{{service_instance}}")],
        unit="short",
        w=12,
    )
    d.panel(
        "timeseries",
        "Open file descriptors",
        [(f"process_open_fds{{{job}}}", "{{job}} {{instance}}")],
        w=12,
    )
    d.row("Media plane")
    d.panel(
        "timeseries",
        "Sent by Media.Subscribe (bit/s): raw video, H.264 packets (ADR 0025), sound",
        [
            (
                f"sum by (job, handle, kind) (rate(baycast_{service}_media_sent_bytes_total"
                f'{{kind!="keepalive",{job}}}[1m])) * 8',
                "{{job}} {{handle}} {{kind}}",
            )
            for service in ("ingest", "mixer", "graphics")
        ],
        w=24,
        unit="bps",
    )
    d.row("Queues and drops")
    # By name pattern: every service names its queue gauges `..._queue_<unit>` and its drop
    # counters `..._dropped_..._total` (metric naming rule), so new ones show up here by themselves.
    d.panel(
        "timeseries",
        "Queue depths (every service)",
        [
            (
                f'{{__name__=~"baycast_.+_queue_[a-z]+",{job}}}',
                "{{__name__}} {{production}}{{output}}{{source}}",
            )
        ],
        w=12,
    )
    d.panel(
        "timeseries",
        "Dropped frames and packets per second (every service)",
        [
            (
                "sum by (job) (rate("
                f'{{__name__=~"baycast_.+_dropped(_[a-z]+)?_total",{job}}}[1m]))',
                "{{job}}",
            )
        ],
        w=12,
    )
    d.panel(
        "timeseries",
        "Program frames dropped by monitoring (per second)",
        [
            (
                "rate(baycast_monitoring_program_frames_dropped_total[1m])",
                "{{production}} {{where}}",
            ),
            ("rate(baycast_monitoring_source_frames_dropped_total[1m])", "source {{source}}"),
        ],
        w=12,
    )
    return dashboard(
        "baycast-internals",
        "baycast / Service internals",
        d,
        [_query_variable("job", "label_values(process_cpu_seconds_total, job)")],
        ["internals"],
    )


DASHBOARDS = {
    "platform-overview.json": platform_overview,
    "sources.json": sources,
    "program-and-outputs.json": program_and_outputs,
    "service-internals.json": service_internals,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for name, build in DASHBOARDS.items():
        (OUT / name).write_text(render(build))
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
