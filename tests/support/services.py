"""Start services for tests: in-process (fast, inspectable) or as subprocesses (real signals)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from services.common.lifecycle import BaseService
from services.common.settings import ServiceSettings, load_settings
from tests.support.nats import free_port

Svc = TypeVar("Svc", bound=BaseService[Any])


@contextlib.asynccontextmanager
async def running_service(
    service_cls: type[Svc], settings_cls: type[ServiceSettings], nats_url: str, **overrides: Any
) -> AsyncIterator[Svc]:
    """Start a service in this event loop on free ports; stop it (drain) afterwards."""
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "http_addr": "127.0.0.1:0",
        "grpc_addr": "127.0.0.1:0",
        "advertise_host": "127.0.0.1",
        "instance": f"{service_cls.name}-test-{free_port()}",
        "drain_seconds": 5.0,
    }
    values.update(overrides)
    settings = load_settings(settings_cls, service_cls.name, environ={}, **values)
    service = service_cls(settings)
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


def http_get_json(url: str, timeout: float = 2.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class ServiceProcess:
    """A service running as `python -m ...` in its own process, with its ports."""

    argv: Sequence[str]
    env: dict[str, str]
    http_port: int
    grpc_port: int
    log_path: str
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 30.0) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        self.wait_ready(timeout)
        return self

    def ready(self) -> bool:
        try:
            status, _ = http_get_json(self.http + "/readyz", timeout=0.5)
        except OSError:
            return False
        return status == 200

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.argv} exited with {self.proc.returncode}:\n{self.logs()}"
                )
            if self.ready():
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.argv} not ready after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def service_process(
    module_or_service: str,
    nats_url: str,
    tmp_path: Any,
    service: str,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    """A subprocess for `baycast <service>`, or `python -m <module>` for a dotted name."""
    http_port, grpc_port = free_port(), free_port()
    prefix = f"BAYCAST_{service.upper()}_"
    full_env = {
        **os.environ,
        "BAYCAST_NATS_URL": nats_url,
        prefix + "HTTP_ADDR": f"127.0.0.1:{http_port}",
        prefix + "GRPC_ADDR": f"127.0.0.1:{grpc_port}",
        prefix + "ADVERTISE_HOST": "127.0.0.1",
        prefix + "INSTANCE": f"{service}-{http_port}",
        "BAYCAST_LOG_FORMAT": "json",
        **(env or {}),
    }
    if "." in module_or_service:
        argv = [sys.executable, "-m", module_or_service]
    else:
        argv = [sys.executable, "-m", "services.cli", module_or_service]
    log_path = str(tmp_path / f"{service}-{http_port}.log")
    return ServiceProcess(argv, full_env, http_port, grpc_port, log_path)


def kill_process_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
