"""Logs and the per-service HTTP endpoint: `/metrics`, `/healthz` (liveness), `/readyz`.

Logs are JSON when stderr is not a terminal (what Kubernetes collects) and pretty on a TTY.
Secrets never reach a log line: values under keys that look like secrets are masked here, in the
one processor every logger passes through.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from services.common.settings import split_addr

SECRET_KEYS = (
    "token",
    "authorization",
    "stream_key",
    "passphrase",
    "password",
    "secret",
    "key",
    "grant",
)
MASK = "***"

ReadinessCheck = Callable[[], tuple[bool, str]]


def _is_secret(key: str) -> bool:
    lowered = key.lower()
    return any(lowered == s or lowered.endswith("_" + s) for s in SECRET_KEYS)


def mask_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        if _is_secret(key) and event[key]:
            event[key] = MASK
    return event


def configure_logging(fmt: str = "auto", level: str = "info", *, stream: Any = None) -> None:
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )


class HttpServer:
    """aiohttp server every service runs; a service adds its own routes to `app` before start."""

    def __init__(
        self, addr: str, *, registry: CollectorRegistry = REGISTRY, max_body: int = 1024 * 1024
    ) -> None:
        self.addr = addr
        self.registry = registry
        self.app = web.Application(client_max_size=max_body)
        self.checks: dict[str, ReadinessCheck] = {}
        self.ready = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def readiness(self) -> tuple[bool, dict[str, str]]:
        results = {"serving": "ok" if self.ready else "not serving"}
        ok = self.ready
        for name, check in self.checks.items():
            passed, detail = check()
            results[name] = "ok" if passed else detail
            ok = ok and passed
        return ok, results

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ok, results = self.readiness()
        return web.json_response({"ready": ok, "checks": results}, status=200 if ok else 503)

    async def start(self) -> None:
        host, port = split_addr(self.addr)
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        self.port = sockets[0].getsockname()[1] if sockets else port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
