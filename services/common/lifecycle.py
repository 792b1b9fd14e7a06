"""How a service lives: start, serve, heartbeat, and drain on SIGTERM.

SIGTERM (or SIGINT) turns readiness false first (HTTP `/readyz` and gRPC health), so Kubernetes
stops sending new work; then the service stops taking commands, finishes what it holds, drains
NATS and exits 0 within `drain_seconds`. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import time
from collections.abc import Coroutine
from typing import Any, ClassVar, Generic, TypeVar

import structlog
from prometheus_client import Gauge, Info

from services.common import shared_memory
from services.common.bus import Bus, subject
from services.common.command_log import CommandLog
from services.common.gen.baycast.v1 import control_pb2
from services.common.rpc import ChannelCache, GrpcServer
from services.common.settings import ServiceSettings
from services.common.tasks import cancel_and_wait
from services.common.telemetry import HttpServer, configure_logging
from services.common.tls import server_context

VERSION = "0.1.0"
HEARTBEAT_INTERVAL_S = 2.0
LOOP_LAG_INTERVAL_S = 0.5
GRPC_GRACE_S = 0.5

S = TypeVar("S", bound=ServiceSettings)

_GAUGES: dict[str, tuple[Gauge, Gauge]] = {}


def _service_gauges(service: str) -> tuple[Gauge, Gauge]:
    """Per-service gauges that every service has, named after it (declared once per process)."""
    if service not in _GAUGES:
        Info(f"baycast_{service}_build", f"Version of the {service} service").info(
            {"version": VERSION}
        )
        _GAUGES[service] = (
            Gauge(f"baycast_{service}_ready", f"1 when the {service} service is ready to serve"),
            Gauge(
                f"baycast_{service}_event_loop_lag_seconds",
                f"How late the {service} event loop wakes a 0.5 s timer",
            ),
        )
    return _GAUGES[service]


class BaseService(Generic[S]):
    """The shared skeleton of the five services.

    A service overrides `setup()` (subscribe, serve commands, add gRPC servicers and HTTP routes)
    and `teardown()` (stop its own tasks); the skeleton owns NATS, gRPC, HTTP and the lifecycle.
    """

    name: ClassVar[str] = "service"

    def __init__(self, settings: S) -> None:
        self.settings = settings
        self.log = structlog.get_logger(self.name).bind(instance=settings.instance)
        shared_memory.configure(settings.shared_memory)
        internal = settings.internal_tls
        self.bus = Bus(
            settings.nats_url,
            f"{self.name}-{settings.instance}",
            replicas=settings.jetstream_replicas,
            tls=internal.nats_context(),
        )
        self.bus.shared_replies = CommandLog(self.bus, settings.instance)
        self.http = HttpServer(
            settings.http_addr,
            https_addr=settings.https_addr,
            https_context=server_context(settings.https_cert_file, settings.https_key_file)
            if settings.https_addr
            else None,
        )
        self.grpc = GrpcServer(settings.grpc_addr, internal.grpc_server_credentials())
        self.channels = ChannelCache(internal.grpc_channel_credentials())
        self.started_at_us = time.time_ns() // 1000
        self.stopping = asyncio.Event()
        self.loop_lag_s = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._ready_gauge, self._lag_gauge = _service_gauges(self.name)
        self.http.add_check("nats", lambda: (self.bus.connected, "not connected to NATS"))

    # -- hooks ---------------------------------------------------------------------------------

    async def setup(self) -> None:
        """Register handlers, servicers, routes; start the service's own tasks."""

    async def before_drain(self) -> None:
        """Last words on the bus before it drains (withdraw handles, publish offline states)."""

    async def teardown(self) -> None:
        """Stop the service's own tasks and release what it holds."""

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.http.ready

    @property
    def grpc_endpoint(self) -> str:
        """host:port that other services use to reach this one's gRPC server (after start)."""
        host = self.settings.grpc_endpoint.rpartition(":")[0]
        return f"{host}:{self.grpc.port}"

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run a background task that is cancelled on stop and whose crash is logged loudly."""
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("task_crashed", task=task.get_name(), exc_info=task.exception())

    async def start(self) -> None:
        self.log.info("starting", http=self.settings.http_addr, grpc=self.settings.grpc_addr)
        await self.bus.connect(stop=self.stopping)
        await self.setup()
        await self.grpc.start()
        await self.http.start()
        await self.bus.serve(
            subject("svc", self.name, self.settings.instance, "status"),
            control_pb2.StatusRequest,
            self._status,
        )
        # Every subscription has reached the server before anyone is told we are ready.
        await self.bus.nc.flush()
        self.spawn(self._heartbeat_loop(), "heartbeat")
        self.spawn(self._loop_lag_loop(), "loop-lag")
        await self.set_ready(True)
        self.log.info(
            "ready",
            http_port=self.http.port,
            grpc_port=self.grpc.port,
            **({"https_port": self.http.https_port} if self.http.https_port else {}),
        )

    async def set_ready(self, ready: bool) -> None:
        self.http.ready = ready
        self._ready_gauge.set(1 if ready else 0)
        await self.grpc.set_serving(ready)

    async def stop(self) -> None:
        """Readiness false, stop taking work, finish, drain the bus, close servers."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        self.log.info("draining")
        await self.set_ready(False)
        await asyncio.sleep(self.settings.unready_seconds)
        await self._stop_step("before_drain", self.before_drain(), self.settings.drain_seconds)
        await self.bus.drain()
        await self._stop_step("teardown", self.teardown(), 2 * self.settings.drain_seconds)
        await cancel_and_wait(list(self._tasks), timeout=self.settings.drain_seconds)
        # The media streams still open end first (their consumers resubscribe elsewhere); the
        # grace lets unary calls (health checks) finish.
        await self.grpc.stop(grace=min(GRPC_GRACE_S, self.settings.drain_seconds / 2))
        await self.channels.close()
        await self.http.stop()
        self.log.info("stopped")

    async def _stop_step(self, step: str, work: Coroutine[Any, Any, None], limit_s: float) -> None:
        """One step of a stop: its failure or overrun is logged, and the stop goes on."""
        try:
            async with asyncio.timeout(limit_s):
                await work
        except TimeoutError:
            self.log.error("stop_step_timed_out", step=step, seconds=limit_s)
        except Exception:
            self.log.exception("stop_step_failed", step=step)

    # -- heartbeat and status ------------------------------------------------------------------

    def heartbeat(self) -> control_pb2.Heartbeat:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return control_pb2.Heartbeat(
            service=self.name,
            instance=self.settings.instance,
            version=VERSION,
            ready=self.ready,
            started_at_us=self.started_at_us,
            time_us=time.time_ns() // 1000,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            rss_bytes=usage.ru_maxrss * 1024,
            http_address=f"{self.settings.http_addr.rpartition(':')[0]}:{self.http.port}",
            grpc_address=self.grpc_endpoint,
            loop_lag_ms=self.loop_lag_s * 1000,
        )

    async def _status(self, _request: control_pb2.StatusRequest) -> control_pb2.Heartbeat:
        return self.heartbeat()

    async def _heartbeat_loop(self) -> None:
        subj = subject("svc", self.name, self.settings.instance, "heartbeat")
        while True:
            with contextlib.suppress(Exception):
                if self.bus.connected:
                    await self.bus.publish(subj, self.heartbeat())
            await asyncio.sleep(HEARTBEAT_INTERVAL_S)

    async def _loop_lag_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(LOOP_LAG_INTERVAL_S)
            self.loop_lag_s = max(0.0, loop.time() - before - LOOP_LAG_INTERVAL_S)
            self._lag_gauge.set(self.loop_lag_s)


async def serve_until_signalled(service: BaseService[S]) -> None:
    """Start `service`, wait for SIGTERM/SIGINT, then drain within the grace period."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            service.log.warning("second_signal_exit_now", signal=signal.Signals(signum).name)
            os._exit(128 + signum)
        service.log.info("signal", signal=signal.Signals(signum).name)
        signalled.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await service.start()
    await signalled.wait()
    try:
        await asyncio.wait_for(service.stop(), timeout=service.settings.drain_seconds)
    except TimeoutError:
        service.log.error("drain_timeout", seconds=service.settings.drain_seconds)
        os._exit(1)


def run(service: BaseService[S]) -> None:
    """Entry point of `baycast <service>`: logging configured, event loop run, exit code set."""
    configure_logging(service.settings.log_format, service.settings.log_level)
    asyncio.run(serve_until_signalled(service))
