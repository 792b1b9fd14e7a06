"""Data binding: a field's value read from a JSON file or an HTTP URL, and re-read live.

A file is re-read when its modification time or size changes; a URL is polled. The value at the
binding's dotted `path` becomes the field's text (numbers plainly, lists and objects as JSON), and
only a change is passed on, so an unchanged scoreboard does not re-render anything.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from services.common import errors
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics import metrics

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
MAX_DOCUMENT_BYTES = 1024 * 1024
_INDEX = re.compile(r"^\d+$")

log = structlog.get_logger("graphics.binding")


def check_binding(spec: graphics_pb2.GfxBinding, where: str) -> None:
    """Raise InvalidArgument naming the part of a binding that is wrong."""
    if bool(spec.file) == bool(spec.url):
        raise errors.InvalidArgument("a binding has either a file or a url", field=f"{where}.url")
    if spec.url and not spec.url.startswith(("http://", "https://")):
        raise errors.InvalidArgument("the url must be http:// or https://", field=f"{where}.url")
    if spec.interval_ms and not MIN_INTERVAL_MS <= spec.interval_ms <= MAX_INTERVAL_MS:
        raise errors.InvalidArgument(
            f"interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}",
            field=f"{where}.interval_ms",
        )


def extract(document: Any, path: str) -> Any:
    """The value at a dotted path (`a.b.0.c`); KeyError when it is not there."""
    value = document
    for key in filter(None, path.split(".")):
        if isinstance(value, list) and _INDEX.match(key) and int(key) < len(value):
            value = value[int(key)]
        elif isinstance(value, dict) and key in value:
            value = value[key]
        else:
            raise KeyError(key)
    return value


def as_field_text(value: Any) -> str:
    """A JSON value as field text: strings as they are, numbers plainly, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(int(value)) if float(value).is_integer() else str(value)
    return json.dumps(value, ensure_ascii=False)


class DataBinding:
    """Watches one source and calls `on_value(text)` whenever the bound value changes."""

    def __init__(
        self,
        spec: graphics_pb2.GfxBinding,
        session: aiohttp.ClientSession,
        on_value: Callable[[str], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.session = session
        self.on_value = on_value
        self.interval = (spec.interval_ms or DEFAULT_INTERVAL_MS) / 1000
        self._file_stamp: tuple[float, int] | None = None
        self._last: str | None = None

    @property
    def source(self) -> str:
        return "file" if self.spec.file else "url"

    async def run(self) -> None:
        while True:
            try:
                document = await (self._read_file() if self.spec.file else self._read_url())
                if document is not _UNCHANGED:
                    text = as_field_text(extract(document, self.spec.path))
                    if text != self._last:
                        self._last = text
                        await self.on_value(text)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.BINDING_ERRORS.labels(self.source).inc()
                log.warning(
                    "binding_read_failed",
                    field=self.spec.field,
                    source=self.spec.file or self.spec.url,
                    error=str(exc) or type(exc).__name__,
                )
            await asyncio.sleep(self.interval)

    async def _read_file(self) -> Any:
        path = Path(self.spec.file)
        stat = await asyncio.to_thread(path.stat)
        stamp = (stat.st_mtime, stat.st_size)
        if stamp == self._file_stamp:
            return _UNCHANGED
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        document = json.loads(text)
        self._file_stamp = stamp  # only after a good read: a half-written file is read again
        return document

    async def _read_url(self) -> Any:
        timeout = aiohttp.ClientTimeout(total=max(1.0, min(5.0, self.interval * 2)))
        async with self.session.get(self.spec.url, timeout=timeout) as resp:
            resp.raise_for_status()
            body = await resp.content.read(MAX_DOCUMENT_BYTES + 1)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise ValueError(f"document larger than {MAX_DOCUMENT_BYTES} bytes")
            return json.loads(body)


_UNCHANGED = object()
