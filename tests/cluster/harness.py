"""Several hosts on one machine: a three-server NATS JetStream cluster and replicas of every
service, each host in a network namespace of its own with its own address on a virtual bridge and
its own /dev/shm, so media crosses hosts over gRPC as between pods (no shared memory).

    async with Cluster(tmp_path) as cluster:       # bridge, hosts, NATS cluster, services ready
        cluster.hosts["mixer-a"].ip                # 10.x.y.z
        cluster.kill("mixer-a")                    # SIGKILL, as a node losing a pod
        await cluster.restart("mixer-a")
        bus = await cluster.inspector_bus()        # a test's user with every right, every server

`python -m tests.cluster.harness` (`make cluster`) starts the same with two small shows on air
(tests/cluster/show.py) and leaves it running with the addresses printed, until Ctrl-C. Needs
root (namespaces, a bridge); nothing here leaves the machine: the bridge has no uplink and every
address is in 10.0.0.0/8 on it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import aiohttp

from services.common.bus import Bus
from services.common.nats_accounts import (
    ROUTE_USER,
    USERS,
    control_role_urls,
    generate_passwords,
    user_url,
)
from services.common.settings import DEFAULT_PORTS
from services.distribution.keyring import write_new_key_file
from tests.support.nats import INSPECTOR, config_with_inspector, nats_server_binary

REPO = Path(__file__).resolve().parents[2]
SERVICES = ("ingest", "graphics", "mixer", "distribution", "monitoring", "control")
NATS_PORT = 4222
ROUTE_PORT = 6222
NATS_MONITOR_PORT = 8222
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 10.0
# Each host mounts a /dev/shm of its own, then runs the command: pods share no shared memory.
OWN_SHM = 'mount -t tmpfs -o size=1g tmpfs /dev/shm && exec "$@"'


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


@dataclass
class Host:
    name: str
    netns: str
    ip: str
    veth: str

    def argv(self, command: list[str]) -> list[str]:
        """`command` run on this host: in its namespace, with its own /dev/shm."""
        return [
            "ip",
            "netns",
            "exec",
            self.netns,
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            OWN_SHM,
            self.name,
            *command,
        ]


class Network:
    """A bridge in this namespace with an address of its own, and hosts plugged into it."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.bridge = f"bc{tag}"
        self.tag = tag
        taken = subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(50):
            net = ipaddress.ip_network(
                f"10.{random.randint(64, 250)}.{random.randint(0, 255)}.0/24"
            )
            if str(net.network_address).rsplit(".", 1)[0] + "." not in taken:
                break
        self.subnet = net
        self.gateway = str(net.network_address + 1)
        self.hosts: dict[str, Host] = {}

    def create(self) -> None:
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        index = len(self.hosts)
        host = Host(
            name,
            f"{self.bridge}-{name}",
            str(self.subnet.network_address + 10 + index),
            f"v{self.tag}{index}",
        )
        run("ip", "netns", "add", host.netns)
        run(
            "ip",
            "link",
            "add",
            host.veth,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        )
        run("ip", "link", "set", host.veth, "master", self.bridge, "up")
        for command in (
            ["ip", "addr", "add", f"{host.ip}/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "set", "lo", "up"],
        ):
            run("ip", "netns", "exec", host.netns, *command)
        self.hosts[name] = host
        return host

    def destroy(self) -> None:
        for host in self.hosts.values():
            with contextlib.suppress(subprocess.SubprocessError):
                run("ip", "netns", "del", host.netns)
            with contextlib.suppress(subprocess.SubprocessError):
                run("ip", "link", "del", host.veth)
        with contextlib.suppress(subprocess.SubprocessError):
            run("ip", "link", "del", self.bridge)


@dataclass
class Process:
    host: Host
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.host.argv(self.argv),
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)


class Cluster:
    def __init__(self, workdir: Path, *, replicas: int = 2, services: tuple[str, ...] = SERVICES):
        self.workdir = workdir
        self.replicas = replicas
        self.services = services
        self.network = Network()
        self.passwords = generate_passwords((*USERS, INSPECTOR, ROUTE_USER))
        # Distribution's replicas seal outputs' secrets with one key (docs/adr/0020).
        key_file = workdir / "distribution-secrets.key"
        write_new_key_file(key_file)
        self.shared_env = {
            "BAYCAST_SRT_SECRET": secrets.token_urlsafe(32),
            "BAYCAST_MEDIA_GRANT_SECRET": secrets.token_urlsafe(32),
            "BAYCAST_DISTRIBUTION_SECRETS_KEY_FILE": str(key_file),
        }
        self.processes: dict[str, Process] = {}

    @property
    def hosts(self) -> dict[str, Host]:
        return self.network.hosts

    def nats_url(self, user: str) -> str:
        """Every server of the cluster with `user`'s credentials, as a pod is given them."""
        return ",".join(
            user_url(f"nats://{self.hosts[f'nats-{i}'].ip}:{NATS_PORT}", user, self.passwords[user])
            for i in range(3)
        )

    def replica_names(self, service: str) -> list[str]:
        return [f"{service}-{chr(ord('a') + i)}" for i in range(self.replicas)]

    def http_url(self, name: str) -> str:
        service = name.rsplit("-", 1)[0]
        return f"http://{self.hosts[name].ip}:{DEFAULT_PORTS[service][0]}"

    async def __aenter__(self) -> Cluster:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        self.network.create()
        try:
            await self._start_nats()
            await self._start_services()
        except BaseException:
            await self.stop()
            raise

    async def _start_nats(self) -> None:
        hosts = [self.network.add_host(f"nats-{i}") for i in range(3)]
        # Routes authenticate: each server's listen URL carries the route user, and so does every
        # route it solicits.
        route_pw = self.passwords[ROUTE_USER]
        routes = ",".join(
            user_url(f"nats://{h.ip}:{ROUTE_PORT}", ROUTE_USER, route_pw) for h in hosts
        )
        config = self.workdir / "nats-auth.conf"
        config.write_text(config_with_inspector(self.passwords))
        for i, host in enumerate(hosts):
            store = self.workdir / host.name
            store.mkdir(parents=True, exist_ok=True)
            argv = [
                nats_server_binary(),
                "-c",
                str(config),
                "-a",
                host.ip,
                "-p",
                str(NATS_PORT),
                "-m",
                str(NATS_MONITOR_PORT),
                "-js",
                "-sd",
                str(store),
                "--name",
                f"n{i}",
                "--cluster_name",
                "baycast",
                "--cluster",
                user_url(f"nats://{host.ip}:{ROUTE_PORT}", ROUTE_USER, route_pw),
                "--routes",
                routes,
            ]
            self.spawn(host.name, host, argv, dict(os.environ))
        await self._wait_jetstream()

    async def _wait_jetstream(self) -> None:
        """Until the cluster answers a JetStream request (its meta leader is elected)."""
        bus = Bus(self.nats_url(INSPECTOR), "cluster-probe")
        await bus.connect()
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await bus.nc.jetstream().account_info()
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.5)
        finally:
            await bus.drain()

    def service_env(self, service: str, name: str) -> dict[str, str]:
        host = self.hosts[name]
        http_port, grpc_port = DEFAULT_PORTS[service]
        prefix = f"BAYCAST_{service.upper()}_"
        env = {
            **os.environ,
            **self.shared_env,
            "BAYCAST_NATS_URL": self.nats_url(service),
            "BAYCAST_JETSTREAM_REPLICAS": "3",
            "BAYCAST_INSTANCE": name,
            "BAYCAST_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
            prefix + "HTTP_ADDR": f"0.0.0.0:{http_port}",
            prefix + "GRPC_ADDR": f"0.0.0.0:{grpc_port}",
            prefix + "ADVERTISE_HOST": host.ip,
        }
        if service in ("ingest", "distribution"):
            env[prefix + "ICE_HOSTS"] = host.ip  # WebRTC from the host's own address
        if service == "control":
            for field, url in control_role_urls(self.nats_url).items():
                env[prefix + field.upper()] = url
        if service == "ingest" and "distribution" in self.services:
            env[prefix + "EXCHANGE_URL"] = self.http_url(self.replica_names("distribution")[0])
        return env

    async def _start_services(self) -> None:
        replicas = [(s, name) for s in self.services for name in self.replica_names(s)]
        for _service, name in replicas:
            self.network.add_host(name)
        for service, name in replicas:
            argv = [sys.executable, "-m", "services.cli", service]
            self.spawn(name, self.hosts[name], argv, self.service_env(service, name))
        await asyncio.gather(*(self.wait_ready(name) for _s, name in replicas))

    def add_host(self, name: str) -> Host:
        """One more host on the bridge (for stations, say)."""
        return self.network.add_host(name)

    def spawn(self, name: str, host: Host, argv: list[str], env: dict[str, str]) -> Process:
        """Run `argv` on `host` as `name`, its output in `<workdir>/<name>.log`."""
        process = Process(host, argv, env, self.workdir / f"{name}.log")
        process.start()
        self.processes[name] = process
        return process

    async def wait_ready(self, name: str, timeout: float = READY_TIMEOUT_S) -> float:
        """Seconds until `name` answers /readyz with 200."""
        started = time.monotonic()
        url = f"{self.http_url(name)}/readyz"
        async with aiohttp.ClientSession() as session:
            while time.monotonic() - started < timeout:
                if not self.processes[name].alive:
                    raise RuntimeError(f"{name} exited: {self.log_tail(name)}")
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as resp:
                        if resp.status == 200:
                            return time.monotonic() - started
                await asyncio.sleep(0.2)
        raise RuntimeError(f"{name} not ready after {timeout:.0f} s: {self.log_tail(name)}")

    def log_tail(self, name: str, size: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.processes[name].log.read_bytes()[-size:].decode(errors="replace")
        return ""

    def kill(self, name: str) -> None:
        """SIGKILL: no drain, no goodbye, as a pod whose node dies."""
        process = self.processes[name]
        process.signal(signal.SIGKILL)
        process.wait(5)

    async def restart(self, name: str) -> None:
        """Start a killed process again, on the same host under the same name."""
        process = self.processes[name]
        process.start()
        if not name.startswith("nats-"):
            await self.wait_ready(name)

    def traffic(self) -> dict[str, tuple[int, int]]:
        """Bytes each host has sent and received so far (its veth's counters, seen from the
        bridge's side: what the host sent is what the bridge received)."""
        out = {}
        for name, host in self.hosts.items():
            stats = Path("/sys/class/net") / host.veth / "statistics"
            sent = int((stats / "rx_bytes").read_text())
            received = int((stats / "tx_bytes").read_text())
            out[name] = (sent, received)
        return out

    async def nats_messages(self) -> int:
        """Messages the clients connected now have published so far: the `in_msgs` of every
        client connection of the three servers (their /connz; routes between servers not counted,
        so a message is counted once, where it entered the cluster)."""
        total = 0
        async with aiohttp.ClientSession() as session:
            for i in range(3):
                url = f"http://{self.hosts[f'nats-{i}'].ip}:{NATS_MONITOR_PORT}/connz?limit=4096"
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                    connz = await resp.json()
                total += sum(int(c.get("in_msgs", 0)) for c in connz.get("connections") or ())
        return total

    async def inspector_bus(self, name: str = "cluster-test") -> Bus:
        """A connection as the test's own user (every right), to send commands and look into
        buckets and streams."""
        bus = Bus(self.nats_url(INSPECTOR), name, replicas=3)
        await bus.connect()
        return bus

    async def stop(self) -> None:
        services = [p for n, p in self.processes.items() if not n.startswith("nats-")]
        servers = [p for n, p in self.processes.items() if n.startswith("nats-")]
        for group in (services, servers):
            for process in group:
                process.signal(signal.SIGTERM)
            await asyncio.gather(
                *(asyncio.to_thread(process.wait, STOP_TIMEOUT_S) for process in group)
            )
        self.network.destroy()


async def main() -> None:
    from tests.cluster.show import SHOWS, Show
    from tests.support.rtmp import RtmpServer

    workdir = Path(tempfile.mkdtemp(prefix="baycast-cluster-"))
    cluster = Cluster(workdir)
    print(f"starting a 3-server NATS cluster and two replicas of each service in {workdir}…")
    await cluster.start()
    rtmp = RtmpServer(workdir / "rtmp", host=cluster.network.gateway)
    bus = None
    try:
        for name, host in cluster.hosts.items():
            print(f"  {name:16} {host.ip:15} netns {host.netns}")
        rtmp.start()
        bus = await cluster.inspector_bus()
        show = Show(cluster, bus, rtmp)
        await show.start(workdir)
        print("two shows on air, pushing to nginx-rtmp on the bridge:")
        for prod in SHOWS:
            print(f"  ffplay {rtmp.url(prod)}")
        print(f"control room: {cluster.http_url('control-a')}/ (director's token: {show.token})")
        print(f"admin: BAYCAST_NATS_URL='{cluster.nats_url('admin')}' baycast ctl status")
        print(f"logs: {workdir}; Ctrl-C stops everything")
        await asyncio.Event().wait()
    finally:
        if bus is not None:
            await bus.drain()
        rtmp.cleanup()
        await cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
