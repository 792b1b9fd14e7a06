"""Logs and the per-service HTTP endpoint: `/metrics`, `/healthz` (liveness), `/readyz`.

Logs are JSON when stderr is not a terminal (what Kubernetes collects) and pretty on a TTY.
Secrets never reach a log line. One processor, which every structlog logger and every library's
standard `logging` record (aiortc, grpc, aiohttp, PyAV) passes through, masks: values under keys
that look like secrets; in any text, the credentials of a URL (`nats://user:***@host`), secret
query parameters (`?token=***`), bearer tokens; and every secret a service has registered with
`register_secret` (stream keys and passphrases, wherever they appear, an RTMP URL's path included).
"""

from __future__ import annotations

import logging
import re
import ssl
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from services.common.settings import split_addr

# What the plain listener still answers when the edges are on HTTPS: the kubelet's probes and
# Prometheus's scrapes, inside the cluster.
PLAIN_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ASYNCIO_NOISE = frozenset({"returning true from eof_received() has no effect when using ssl"})

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


# Secrets a service knows (an output's stream key): masked wherever they appear in a line. Too
# short a value would mask ordinary words, so such values are not taken.
MIN_REGISTERED = 6
_registered: set[str] = set()
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@")
_QUERY_SECRET = re.compile(
    r"(?i)([?&;](?:[a-z_]*(?:token|key|passphrase|password|secret|grant)|streamid)=)[^&\s\"']+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[a-z0-9._~+/=-]+")


def register_secret(value: str) -> None:
    """Mask `value` in every log line from now on."""
    if len(value) >= MIN_REGISTERED:
        _registered.add(value)


def mask_text(text: str) -> str:
    """`text` with URL credentials, secret query values, bearer tokens and registered secrets
    replaced by `***`."""
    for secret in _registered:
        if secret in text:
            text = text.replace(secret, MASK)
    if "://" in text:
        text = _URL_CREDENTIALS.sub(rf"\g<1>{MASK}@", text)
    if "=" in text:
        text = _QUERY_SECRET.sub(rf"\g<1>{MASK}", text)
    return _BEARER.sub(rf"\g<1>{MASK}", text)


def mask_secrets(
    _logger: Any, _method: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event):
        value = event[key]
        if _is_secret(key) and value:
            event[key] = MASK
        elif isinstance(value, str):
            event[key] = mask_text(value)
        elif isinstance(value, BaseException | list | tuple | dict):
            text = str(value)
            masked = mask_text(text)
            if masked != text:
                event[key] = masked
    return event


def configure_logging(fmt: str = "auto", level: str = "info", *, stream: Any = None) -> None:
    """structlog for the services' own lines; the standard library's records (the libraries')
    rendered by the same processors, at WARNING and above unless `level` is debug."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if fmt == "console"
        else structlog.processors.JSONRenderer(ensure_ascii=False)
    )
    shared: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            mask_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                mask_secrets,
                renderer,
            ],
        )
    )
    handler.addFilter(_known_noise)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if level.lower() == "debug" else logging.WARNING)


def _known_noise(record: logging.LogRecord) -> bool:
    """False for a library warning that reports nothing wrong: asyncio's about a TLS stream's
    end (nats-py's transport says it keeps the connection half-open; over TLS it cannot), at
    every NATS-over-TLS disconnect."""
    return not (record.name == "asyncio" and record.getMessage() in ASYNCIO_NOISE)


def _bound_port(site: web.TCPSite, port: int) -> int:
    sockets = getattr(site._server, "sockets", None)
    return int(sockets[0].getsockname()[1]) if sockets else port


class HttpServer:
    """aiohttp server every service runs; a service adds its own routes to `app` before start."""

    def __init__(
        self,
        addr: str,
        *,
        registry: CollectorRegistry = REGISTRY,
        max_body: int = 1024 * 1024,
        https_addr: str = "",
        https_context: ssl.SSLContext | None = None,
    ) -> None:
        self.addr = addr
        self.registry = registry
        # With an HTTPS listener, the plain one answers probes and metrics only (PLAIN_PATHS):
        # a token never crosses it.
        self.https_addr = https_addr if https_context is not None else ""
        self.https_context = https_context
        middlewares = [self._plain_guard] if self.https_addr else []
        self.app = web.Application(client_max_size=max_body, middlewares=middlewares)
        self.checks: dict[str, ReadinessCheck] = {}
        self.ready = False
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.https_port = 0
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
        self.port = _bound_port(site, port)
        if self.https_addr:
            host, port = split_addr(self.https_addr)
            secure = web.TCPSite(
                self._runner, host, port, ssl_context=self.https_context, reuse_address=True
            )
            await secure.start()
            self.https_port = _bound_port(secure, port)

    @web.middleware
    async def _plain_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.secure or request.path in PLAIN_PATHS:
            return await handler(request)
        # Refused, not redirected: a client that sent a token here has already sent it in clear,
        # and a redirect would teach it that this works.
        return web.Response(
            status=403,
            text=f"PERMISSION_DENIED: this port serves probes and metrics only; "
            f"use https on port {self.https_port}\n",
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
