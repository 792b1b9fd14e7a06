"""A real Prometheus server (Debian's `/usr/bin/prometheus`) on a free loopback port, for tests.

It scrapes the given targets every `scrape_interval` and answers PromQL through its HTTP API.
Its config and TSDB live in a temporary folder that is removed on stop.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support.nats import free_port

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"


class PrometheusServer:
    """`targets` maps a job name to its `host:port` targets (scraped at `/metrics`)."""

    def __init__(
        self,
        targets: Mapping[str, Sequence[str]],
        *,
        scrape_interval: str = "1s",
        rule_files: Sequence[str] = (),
    ) -> None:
        self.targets = targets
        self.scrape_interval = scrape_interval
        self.rule_files = list(rule_files)
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="baycast-prometheus-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.dir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "rule_files": self.rule_files,
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": list(targets)}]}
                for job, targets in self.targets.items()
            ],
        }

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        config = self.dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        args = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=0.5) as resp:
                    if resp.status == 200:
                        return self
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"prometheus not ready after {timeout} s")

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path}: {body}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def wait_for(self, expr: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll `expr` until it returns at least one sample."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result:
                return result
            time.sleep(0.25)
        raise TimeoutError(f"{expr!r} returned nothing for {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
