"""KvBucket.keys: the server's pending count ends the read, not the watcher's early "no more"
marker (nats-io/nats.py#842), and delete or purge markers are not keys."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import nats.errors
import pytest
from nats.js.kv import KeyValue

from services.common import bus as bus_module
from services.common import errors
from services.common.bus import KvBucket
from services.common.gen.baycast.v1 import control_pb2


def _entry(key: str, delta: int, operation: str | None = None) -> KeyValue.Entry:
    return KeyValue.Entry("b", key, None, 1, delta, None, operation)


class _Watcher:
    def __init__(self, updates: list[KeyValue.Entry | None]) -> None:
        self._updates = list(updates)
        self.stopped = False

    async def updates(self, timeout: float = 5.0) -> KeyValue.Entry | None:
        if not self._updates:
            await asyncio.sleep(timeout)
            raise nats.errors.TimeoutError
        return self._updates.pop(0)

    async def stop(self) -> None:
        self.stopped = True


@dataclass
class _Status:
    values: int


class _Store:
    def __init__(self, values: int, updates: list[KeyValue.Entry | None]) -> None:
        self.values = values
        self.watcher = _Watcher(updates)

    async def status(self) -> _Status:
        return _Status(self.values)

    async def watchall(self, **_kwargs: Any) -> _Watcher:
        return self.watcher


def _bucket(store: _Store) -> KvBucket[control_pb2.SourceState]:
    return KvBucket(store, control_pb2.SourceState)  # type: ignore[arg-type]


async def test_an_early_end_marker_does_not_end_the_read() -> None:
    store = _Store(
        4,
        [None, _entry("a", 3), _entry("b", 2, "DEL"), _entry("c", 1, "PURGE"), _entry("d", 0)],
    )
    assert await _bucket(store).keys() == ["a", "d"]
    assert store.watcher.stopped


async def test_an_empty_bucket_is_read_without_a_watcher() -> None:
    store = _Store(0, [])
    assert await _bucket(store).keys() == []
    assert not store.watcher.stopped  # never started


async def test_keys_that_stop_arriving_are_an_error_not_a_short_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bus_module, "KEYS_TIMEOUT_S", 0.01)
    store = _Store(5, [None, _entry("a", 4)])
    with pytest.raises(errors.Unavailable):
        await _bucket(store).keys()
    assert store.watcher.stopped
