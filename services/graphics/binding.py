"""Data binding: a field's value read from a JSON file or an HTTP URL, and re-read live.

A file is re-read when it changes (another file behind the name, its modification time or size);
a URL is polled. The value at the binding's dotted `path` becomes the field's text (numbers
plainly, lists and objects as JSON), and only a change is passed on, so an unchanged scoreboard
does not re-render anything.

What a binding may read is the data policy's (data_policy.py): a command naming a source the
policy refuses is refused whole, and a source that turns out refused while it is watched (a host
resolving to a forbidden address, a redirect out of the allow-list, a file replaced by a link out
of the data folder) feeds nothing and is reported once to `on_refused`, until it reads again.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from services.common import errors
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics import metrics
from services.graphics.data_policy import BindingRefused, DataPolicy
from services.graphics.data_reader import DataReader, FileStamp

DEFAULT_INTERVAL_MS = 1000
MIN_INTERVAL_MS = 100
MAX_INTERVAL_MS = 3_600_000
# A URL gets at most twice its interval to answer (and never under this, nor over the policy's).
MIN_TIMEOUT_S = 1.0
_INDEX = re.compile(r"^\d+$")

log = structlog.get_logger("graphics.binding")


def source_kind(spec: graphics_pb2.GfxBinding) -> str:
    return "file" if spec.file else "url"


def count_refusal(exc: BindingRefused, source: str) -> None:
    metrics.BINDING_REFUSALS.labels(source, exc.rule).inc()


def check_binding(spec: graphics_pb2.GfxBinding, where: str, policy: DataPolicy) -> None:
    """Raise InvalidArgument naming the part of a binding that is wrong, or BindingRefused
    (PERMISSION_DENIED) naming the field whose source the policy refuses."""
    if bool(spec.file) == bool(spec.url):
        raise errors.InvalidArgument("a binding has either a file or a url", field=f"{where}.url")
    if spec.url and not spec.url.startswith(("http://", "https://")):
        raise errors.InvalidArgument("the url must be http:// or https://", field=f"{where}.url")
    if spec.interval_ms and not MIN_INTERVAL_MS <= spec.interval_ms <= MAX_INTERVAL_MS:
        raise errors.InvalidArgument(
            f"interval_ms must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}",
            field=f"{where}.interval_ms",
        )
    field = f"{where}.{source_kind(spec)}"
    try:
        if spec.file:
            policy.resolve_file(spec.file)
        else:
            policy.check_url(spec.url)
    except BindingRefused as exc:
        count_refusal(exc, source_kind(spec))
        raise exc.at(field) from None
    except ValueError as exc:
        raise errors.InvalidArgument(f"not a url: {exc}", field=field) from None


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
        reader: DataReader,
        on_value: Callable[[str], Awaitable[None]],
        on_refused: Callable[[BindingRefused], Awaitable[None]],
    ) -> None:
        self.spec = spec
        self.reader = reader
        self.on_value = on_value
        self.on_refused = on_refused
        self.interval = (spec.interval_ms or DEFAULT_INTERVAL_MS) / 1000
        self._file_stamp: FileStamp | None = None
        self._last: str | None = None
        self._refused: str | None = None

    @property
    def source(self) -> str:
        return source_kind(self.spec)

    async def run(self) -> None:
        while True:
            try:
                document = await (self._read_file() if self.spec.file else self._read_url())
                self._refused = None
                if document is not _UNCHANGED:
                    text = as_field_text(extract(document, self.spec.path))
                    if text != self._last:
                        self._last = text
                        await self.on_value(text)
            except asyncio.CancelledError:
                raise
            except BindingRefused as exc:
                await self._refuse(exc)
            except Exception as exc:
                metrics.BINDING_ERRORS.labels(self.source).inc()
                log.warning(
                    "binding_read_failed",
                    field=self.spec.field,
                    source=self.spec.file or self.spec.url,
                    error=str(exc) or type(exc).__name__,
                )
            await asyncio.sleep(self.interval)

    async def _refuse(self, exc: BindingRefused) -> None:
        count_refusal(exc, self.source)
        if exc.message == self._refused:
            return  # told already: the source is polled on, reported again when it changes
        self._refused = exc.message
        log.warning("binding_refused", field=self.spec.field, rule=exc.rule, error=exc.message)
        try:
            await self.on_refused(exc)
        except Exception as report_exc:
            log.error("binding_refusal_unreported", field=self.spec.field, error=str(report_exc))

    async def _read_file(self) -> Any:
        stamp, content = await self.reader.read_file(self.spec.file, self._file_stamp)
        if content is None:
            return _UNCHANGED
        document = json.loads(content.decode("utf-8"))
        self._file_stamp = stamp  # only after a good read: a half-written file is read again
        return document

    async def _read_url(self) -> Any:
        timeout_s = max(MIN_TIMEOUT_S, self.interval * 2)
        return json.loads(await self.reader.fetch(self.spec.url, timeout_s))


_UNCHANGED = object()
