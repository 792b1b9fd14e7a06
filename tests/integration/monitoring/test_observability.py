"""The observability assets against real tools: promtool, Prometheus, real `/metrics` output."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.bus import Bus, subject
from services.common.gen.baycast.v1 import control_pb2, distribution_pb2
from services.monitoring.service import MonitoringService
from services.monitoring.settings import MonitoringSettings
from tests.integration.monitoring.conftest import ProgramFeed, wait_until
from tests.support.nats import NatsServer
from tests.support.prometheus import PROMTOOL, PrometheusServer
from tests.support.services import running_service, service_process

ROOT = Path(__file__).resolve().parents[3]
OBSERVABILITY = ROOT / "deploy/observability"
RULES = sorted((OBSERVABILITY / "rules").glob("*.yaml"))
RULE_TESTS = sorted((OBSERVABILITY / "rules/tests").glob("*.yaml"))
# The dashboards' one copy, where kustomize's component and the Helm chart read it.
DASHBOARD_DIR = ROOT / "deploy/k8s/components/dashboards/dashboards"
DASHBOARDS = sorted(DASHBOARD_DIR.glob("*.json"))
METRIC_NAME = re.compile(r"\b(?:baycast|process)_\w+")
NAME_REGEX = re.compile(r'__name__=~"([^"]+)"')
# Metrics every service gets from the common glue or prometheus-client, whatever its name.
COMMON_SUFFIXES = ("_ready", "_event_loop_lag_seconds", "_build_info")


def test_promtool_checks_the_rules() -> None:
    assert RULES
    result = subprocess.run(
        [PROMTOOL, "check", "rules", *map(str, RULES)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_rule_unit_tests_pass() -> None:
    assert RULE_TESTS
    result = subprocess.run(
        [PROMTOOL, "test", "rules", *map(str, RULE_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert the rules define is exercised by a unit test.
    tested = {
        case["alertname"]
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert _alert_names() == tested


def _alert_names() -> set[str]:
    return {
        rule["alert"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }


def test_dashboards_are_grafana_models_and_up_to_date() -> None:
    sys.path.insert(0, str(OBSERVABILITY))
    try:
        import dashboards as generator  # deploy/observability/dashboards.py
    finally:
        sys.path.remove(str(OBSERVABILITY))
    assert {p.name for p in DASHBOARDS} == set(generator.DASHBOARDS)
    uids = set()
    for path in DASHBOARDS:
        assert path.read_text() == generator.render(generator.DASHBOARDS[path.name]), (
            f"{path.name} is stale: run deploy/observability/dashboards.py"
        )
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        assert board["schemaVersion"] >= 36 and board["title"].startswith("baycast / ")
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24 and pos["h"] > 0
            if panel["type"] == "row":
                if "repeat" in panel:
                    assert panel["repeat"] in variables
                continue
            assert panel["datasource"]["uid"] == "${datasource}"
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                for var in re.findall(r"\$(\w+)", target["expr"]):
                    assert var in variables, (path.name, var)
    assert len(uids) == len(DASHBOARDS)
    sources = json.loads((DASHBOARD_DIR / "sources.json").read_text())
    rows = [p for p in sources["panels"] if p["type"] == "row" and p.get("repeat") == "source"]
    assert len(rows) == 1
    titles = {p["title"] for p in sources["panels"]}
    assert {
        "Bitrate",
        "Frame rate",
        "Packet loss",
        "Jitter",
        "Round-trip time",
        "Audio level",
    } <= titles


def _expressions() -> list[str]:
    exprs = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        exprs += [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
        exprs += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            exprs += [rule["expr"] for rule in group["rules"]]
    return exprs


def _scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        text: str = resp.read().decode()
    return text


def _sample_names(exposition: str) -> set[str]:
    return {
        re.split(r"[{ ]", line, maxsplit=1)[0]
        for line in exposition.splitlines()
        if line and not line.startswith("#")
    }


def _declared_names(exposition: str) -> set[str]:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
    return names


async def _populate(bus: Bus, source: str, production: str) -> None:
    """Events that give the monitoring service a source, stats, another instance and an output."""
    await bus.publish(
        subject("source", source, "state"),
        control_pb2.SourceState(source=source, name="广州台", online=True, protocol="whip"),
    )
    await bus.publish(
        subject("source", source, "stats"),
        control_pb2.SourceStats(
            source=source, fps=25, bitrate_kbps=2500, jitter_ms=4, rtt_ms=20, audio_level_dbfs=-20
        ),
    )
    await bus.publish(
        subject("svc", "mixer", "mixer-obs", "heartbeat"),
        control_pb2.Heartbeat(service="mixer", instance="mixer-obs", ready=True, version="0.1.0"),
    )
    await bus.publish(
        subject("prod", production, "dist", "output", "rtmp-1", "state"),
        distribution_pb2.OutputState(
            id="rtmp-1",
            production=production,
            kind=distribution_pb2.OUTPUT_KIND_RTMP,
            status=distribution_pb2.OUTPUT_STATUS_RETRYING,
            reason="connection refused",
        ),
    )


@pytest.fixture
async def populated_monitoring(nats_server: NatsServer, program_feed: ProgramFeed, bus: Bus) -> Any:
    p = program_feed.production
    async with running_service(
        MonitoringService, MonitoringSettings, nats_server.url, discovery_interval_s=0.2
    ) as svc:
        await _populate(bus, f"src{p}", p)
        await wait_until(
            lambda: (
                p in svc.watchers
                and svc.watchers[p].monitor.reading.audio_frames > 90
                and f"src{p}" in svc.health.sources
                and f"{p}/rtmp-1" in svc.health.outputs
            ),
            30,  # 90 audio frames take 2 s; a loaded machine takes longer
            "monitoring populated",
        )
        yield svc


async def test_every_metric_in_dashboards_and_rules_exists_in_real_metrics(
    populated_monitoring: MonitoringService, nats_server: NatsServer, tmp_path: Path
) -> None:
    svc = populated_monitoring
    monitoring = await asyncio.to_thread(_scrape, f"http://127.0.0.1:{svc.http.port}/metrics")
    probe = service_process("tests.support.probe_service", nats_server.url, tmp_path, "probe")
    probe.start()
    try:
        glue = await asyncio.to_thread(_scrape, probe.http + "/metrics")
    finally:
        probe.stop()
    samples = _sample_names(monitoring) | _sample_names(glue)
    assert "baycast_probe_event_loop_lag_seconds" in samples  # the glue's own, per service

    exprs = _expressions()
    used = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert "baycast_monitoring_program_loudness_lufs" in used
    # Other services' metrics: declared by that service's metrics module, in a real exposition.
    foreign = {
        n for n in used if n.startswith("baycast_") and not n.startswith("baycast_monitoring_")
    }
    # Importing a service's metrics module declares its metrics in this process's registry,
    # which the monitoring service's /metrics endpoint serves.
    for service in {n.split("_")[1] for n in foreign}:
        importlib.import_module(f"services.{service}.metrics")
    declared = _declared_names(
        await asyncio.to_thread(_scrape, f"http://127.0.0.1:{svc.http.port}/metrics")
    )
    for name in sorted(used):
        if name in foreign:
            assert name in declared, f"{name} is not declared by its service"
        else:
            assert name in samples, f"{name} is used but has no sample in real /metrics output"
    for expr in exprs:
        for pattern in NAME_REGEX.findall(expr):
            matched = [n for n in samples if re.fullmatch(pattern, n)]
            assert matched, f"{pattern!r} matches no metric"
            if pattern.endswith(COMMON_SUFFIXES):
                assert any(n.startswith("baycast_probe_") for n in matched)


async def test_a_real_prometheus_scrapes_the_monitoring_service(
    populated_monitoring: MonitoringService, program_feed: ProgramFeed
) -> None:
    svc = populated_monitoring
    p = program_feed.production
    prometheus = PrometheusServer(
        {"baycast-monitoring": [f"127.0.0.1:{svc.http.port}"]},
        rule_files=[str(path) for path in RULES],
    )
    await asyncio.to_thread(prometheus.start)
    try:
        result = await asyncio.to_thread(prometheus.wait_for, "baycast_monitoring_nats_connected")
        assert result[0]["value"][1] == "1"
        assert result[0]["metric"]["job"] == "baycast-monitoring"
        loudness = await asyncio.to_thread(
            prometheus.wait_for,
            f'baycast_monitoring_program_loudness_lufs{{production="{p}",window="integrated"}}',
        )
        assert abs(float(loudness[0]["value"][1]) - -23.0) < 0.2
        up = await asyncio.to_thread(prometheus.query, 'up{job="baycast-monitoring"}')
        assert up[0]["value"][1] == "1"
        # The rules load and evaluate in a real server.
        groups = (await asyncio.to_thread(prometheus.api, "rules"))["groups"]
        rules = [r for g in groups for r in g["rules"]]
        assert {r["name"] for r in rules} == _alert_names()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            r.get("lastEvaluation", "").startswith("0001") for r in rules
        ):
            await asyncio.sleep(0.5)
            groups = (await asyncio.to_thread(prometheus.api, "rules"))["groups"]
            rules = [r for g in groups for r in g["rules"]]
        assert all(r["health"] == "ok" for r in rules), rules
    finally:
        await asyncio.to_thread(prometheus.stop)
