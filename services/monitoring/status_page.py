"""The platform's status as JSON (`/status`) and as a plain HTML page (`/`) for a person."""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format

from services.common.bus import Bus
from services.common.gen.baycast.v1 import distribution_pb2
from services.monitoring.alerts import AlertBook
from services.monitoring.confidence import BLACK, FROZEN, LOST, LOUDNESS, SILENT
from services.monitoring.health import HealthModel, enum_word, finite_or_none
from services.monitoring.program_watcher import ProgramWatcher

REFRESH_S = 2


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds") if us else ""


def _round(value: float, digits: int = 2) -> float | None:
    finite = finite_or_none(value)
    return None if finite is None else round(finite, digits)


def build_status(
    health: HealthModel,
    watchers: Mapping[str, ProgramWatcher],
    alerts: AlertBook,
    bus: Bus,
    now: float | None = None,
    *,
    on_duty: bool = True,
) -> dict[str, Any]:
    """`on_duty`: whether this replica publishes its alerts (the others only judge them)."""
    now = health.clock() if now is None else now
    return {
        "time": _iso(time.time_ns() // 1000),
        "nats": {"connected": bus.connected, "disconnects": bus.disconnects},
        "services": [
            {
                "service": i.service,
                "instance": i.instance,
                "up": not i.missing,
                "ready": i.beat.ready and not i.missing,
                "version": i.beat.version,
                "started_at": _iso(i.beat.started_at_us),
                "last_seen_s": round(now - i.last_seen, 1),
                "load": {
                    "cpu_cores": round(i.cpu_fraction, 3),
                    "cpu_seconds": round(i.beat.cpu_seconds, 2),
                    "rss_bytes": i.beat.rss_bytes,
                    "loop_lag_ms": round(i.beat.loop_lag_ms, 2),
                },
                "http_address": i.beat.http_address,
                "grpc_address": i.beat.grpc_address,
            }
            for i in sorted(health.instances.values(), key=lambda i: i.key)
        ],
        "sources": [_source(s, now) for _, s in sorted(health.sources.items())],
        "productions": [
            _production(p, health, watchers.get(p), now)
            for p in sorted(_productions(health, watchers))
        ],
        "outputs": [
            {
                "production": o.production,
                "output": o.output,
                "label": o.event.label,
                "kind": distribution_kind(o.event.kind),
                "state": o.state,
                "enabled": o.event.enabled,
                "since": _iso(o.event.since_us),
                "reason": o.event.reason,
                "retrying_for_s": round(o.retrying_for(now), 1),
                "attempts": o.event.attempts,
                "reconnects": o.event.reconnects,
                "bitrate_kbps": round(o.event.bitrate_kbps, 1),
                "dropped_packets": o.event.dropped_packets,
            }
            for _, o in sorted(health.outputs.items())
        ],
        "alerts_on_duty": on_duty,
        "alerts": [
            json_format.MessageToDict(a, preserving_proto_field_name=True) for a in alerts.firing()
        ],
    }


def distribution_kind(kind: int) -> str:
    return enum_word(distribution_pb2.OutputKind, kind, "OUTPUT_KIND_")


def _productions(health: HealthModel, watchers: Mapping[str, ProgramWatcher]) -> set[str]:
    return set(health.productions) | set(watchers)


def _source(s: Any, now: float) -> dict[str, Any]:
    state, stats = s.state, s.stats
    out: dict[str, Any] = {
        "source": s.source,
        "station": state.station if state else "",
        "name": state.name if state else "",
        "online": s.online,
        "protocol": state.protocol if state else "",
        "since": _iso(state.since_us) if state else "",
        "quality": s.quality(now),
        "reasons": s.reasons(now),
        "stats": None,
    }
    if stats is not None:
        out["stats"] = {
            "fps": round(stats.fps, 2),
            "bitrate_kbps": round(stats.bitrate_kbps, 1),
            "loss_fraction": round(stats.loss_fraction, 4),
            "jitter_ms": round(stats.jitter_ms, 2),
            "rtt_ms": round(stats.rtt_ms, 2),
            "audio_level_dbfs": _round(stats.audio_level_dbfs, 1),
            "width": stats.width,
            "height": stats.height,
            "age_s": round(now - s.stats_at, 1) if s.stats_at is not None else None,
        }
    return out


def _production(
    production: str, health: HealthModel, watcher: ProgramWatcher | None, now: float
) -> dict[str, Any]:
    out: dict[str, Any] = {"production": production, "program": None, "mixer": None}
    p = health.productions.get(production)
    out["graphics"] = (
        [
            {"id": g.id, "template": g.template, "layer": g.layer}
            for g in sorted(p.graphics.values(), key=lambda g: (g.layer, g.id))
        ]
        if p is not None
        else []
    )
    if p is not None and p.mixer is not None:
        switcher = p.mixer.switcher
        out["mixer"] = {
            "program": switcher.program,
            "preview": switcher.preview,
            "layout": switcher.layout.name or switcher.layout.kind,
            "ftb": switcher.ftb,
            "transition_active": p.mixer.transition.active,
            "showing": dict(p.mixer.showing),
            "instance": p.mixer.instance,
            "age_s": round(now - p.mixer_at, 1) if p.mixer_at is not None else None,
        }
    if watcher is not None:
        m = watcher.monitor
        r = m.reading
        meter = m.loudness
        out["program"] = {
            "handle": watcher.handle,
            "receiving": r.video_frames > 0 and not m.active(LOST),
            "black": m.active(BLACK),
            "frozen": m.active(FROZEN),
            "silent": m.active(SILENT),
            "loudness_off_target": m.active(LOUDNESS),
            "luma": _round(r.luma, 1),
            "frame_difference": _round(r.difference, 2),
            "audio_level_dbfs": _round(r.audio_level_dbfs, 1),
            "size": f"{r.width}x{r.height}" if r.width else "",
            "video_frames": r.video_frames,
            "audio_frames": r.audio_frames,
            "loudness": {
                "momentary_lufs": _round(meter.momentary, 1),
                "short_term_lufs": _round(meter.short_term, 1),
                "integrated_lufs": _round(meter.integrated, 1),
                "range_lu": _round(meter.loudness_range, 1),
                "true_peak_dbtp": _round(meter.true_peak_dbtp, 1),
                "target_lufs": watcher.loudness_target_lufs,
            },
        }
    return out


# -- HTML ----------------------------------------------------------------------------------------

_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#eee}.bad{background:#f8d0d0}.warn{background:#fbeec0}.ok{background:#d8f0d8}
"""


def _cell(value: Any, css: str = "") -> str:
    text = "" if value is None else str(value)
    cls = f' class="{css}"' if css else ""
    return f"<td{cls}>{html.escape(text)}</td>"


def _table(title: str, columns: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(rows) or f'<tr><td colspan="{len(columns)}">none</td></tr>'
    return f"<h2>{html.escape(title)}</h2><table><tr>{head}</tr>{body}</table>"


def _flag(on: bool, bad: str = "bad") -> tuple[str, str]:
    return ("yes", bad) if on else ("no", "ok")


def render_html(status: dict[str, Any]) -> str:
    alerts = [
        "<tr>"
        + _cell(a.get("severity"), "bad" if a.get("severity") == "critical" else "warn")
        + _cell(a.get("condition"))
        + _cell(a.get("target"))
        + _cell(_iso(int(a.get("raised_at_us", 0))))
        + _cell(a.get("message"))
        + "</tr>"
        for a in status["alerts"]
    ]
    services = [
        "<tr>"
        + _cell(s["service"])
        + _cell(s["instance"])
        + _cell("up" if s["up"] else "MISSING", "ok" if s["up"] else "bad")
        + _cell("yes" if s["ready"] else "no", "ok" if s["ready"] else "warn")
        + _cell(s["version"])
        + _cell(f"{s['load']['cpu_cores']:.2f}")
        + _cell(f"{s['load']['rss_bytes'] / 2**20:.0f} MiB")
        + _cell(f"{s['load']['loop_lag_ms']:.1f} ms")
        + _cell(f"{s['last_seen_s']} s")
        + "</tr>"
        for s in status["services"]
    ]
    quality_css = {"good": "ok", "degraded": "warn", "bad": "bad", "offline": "bad"}
    sources = [
        "<tr>"
        + _cell(s["source"])
        + _cell(s["name"])
        + _cell(s["protocol"])
        + _cell("online" if s["online"] else "offline", "ok" if s["online"] else "bad")
        + _cell(s["quality"], quality_css.get(s["quality"], ""))
        + _cell(", ".join(s["reasons"]))
        + _cell((s["stats"] or {}).get("fps"))
        + _cell((s["stats"] or {}).get("bitrate_kbps"))
        + "</tr>"
        for s in status["sources"]
    ]
    productions = []
    for p in status["productions"]:
        prog = p["program"] or {}
        mixer = p["mixer"] or {}
        loud = prog.get("loudness") or {}
        cells = [_cell(p["production"]), _cell(mixer.get("program")), _cell(mixer.get("layout"))]
        cells.append(_cell(", ".join(g["template"] for g in p["graphics"])))
        cells.append(
            _cell(
                "yes" if prog.get("receiving") else "no", "ok" if prog.get("receiving") else "bad"
            )
        )
        for key in ("black", "frozen", "silent"):
            text, css = _flag(bool(prog.get(key)))
            cells.append(_cell(text, css))
        cells.append(
            _cell(loud.get("short_term_lufs"), "warn" if prog.get("loudness_off_target") else "")
        )
        cells.append(_cell(loud.get("target_lufs")))
        cells.append(_cell(loud.get("integrated_lufs")))
        cells.append(_cell(loud.get("true_peak_dbtp")))
        productions.append("<tr>" + "".join(cells) + "</tr>")
    outputs = [
        "<tr>"
        + _cell(o["production"])
        + _cell(o["output"])
        + _cell(o["kind"])
        + _cell(o["state"], {"live": "ok", "retrying": "warn", "failed": "bad"}.get(o["state"], ""))
        + _cell(o["retrying_for_s"])
        + _cell(o["reconnects"])
        + "</tr>"
        for o in status["outputs"]
    ]
    nats = status["nats"]
    bus = "connected" if nats["connected"] else "DISCONNECTED"
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f'<meta http-equiv="refresh" content="{REFRESH_S}">'
        f"<title>baycast status</title><style>{_STYLE}</style></head><body>"
        f"<h1>baycast status</h1><p>{html.escape(status['time'])} · NATS {bus} · "
        f"{len(status['alerts'])} alert(s) firing · <a href=status>JSON</a> · "
        "<a href=metrics>metrics</a></p>"
        + _table("Alerts", ["severity", "condition", "target", "raised", "message"], alerts)
        + _table(
            "Productions",
            [
                "production",
                "on air",
                "layout",
                "graphics",
                "receiving",
                "black",
                "frozen",
                "silent",
                "short-term LUFS",
                "target LUFS",
                "integrated LUFS",
                "true peak dBTP",
            ],
            productions,
        )
        + _table(
            "Outputs",
            ["production", "output", "kind", "state", "retrying s", "reconnects"],
            outputs,
        )
        + _table(
            "Sources",
            ["source", "name", "protocol", "state", "quality", "reasons", "fps", "kbit/s"],
            sources,
        )
        + _table(
            "Service instances",
            [
                "service",
                "instance",
                "up",
                "ready",
                "version",
                "cpu",
                "rss",
                "loop lag",
                "last beat",
            ],
            services,
        )
        + "</body></html>"
    )
