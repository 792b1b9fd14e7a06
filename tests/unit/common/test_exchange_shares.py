"""A production's exchange state merged across distribution replicas
(services/common/exchange_shares.py)."""

from __future__ import annotations

import pytest

from services.common import exchange_shares
from services.common.exchange_shares import ExchangeShares
from services.common.gen.baycast.v1 import exchange_pb2


def share(
    instance: str, viewers: list[str], time_us: int, cue: str = ""
) -> exchange_pb2.ExchangeState:
    state = exchange_pb2.ExchangeState(production="p", instance=instance, time_us=time_us)
    state.viewers.extend(exchange_pb2.Viewer(id=v, production="p") for v in viewers)
    if cue:
        state.cues.add(id=cue, production="p")
    return state


def test_every_replica_s_viewers_and_the_newest_cues(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(exchange_shares.time, "monotonic", lambda: now[0])
    shares = ExchangeShares(stale_s=15.0)
    assert shares.merged("p") is None
    shares.add(share("a", ["v1", "v2"], 1, cue="old"))
    shares.add(share("b", ["v3"], 2, cue="new"))
    merged = shares.merged("p")
    assert merged is not None
    assert [v.id for v in merged.viewers] == ["v1", "v2", "v3"]
    assert [c.id for c in merged.cues] == ["new"] and merged.instance == ""
    # A replica's newer share replaces its older one.
    shares.add(share("a", ["v2"], 3))
    merged = shares.merged("p")
    assert merged is not None and [v.id for v in merged.viewers] == ["v2", "v3"]


def test_a_replica_that_stopped_publishing_leaves(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(exchange_shares.time, "monotonic", lambda: now[0])
    shares = ExchangeShares(stale_s=15.0)
    shares.add(share("a", ["v1"], 1))
    now[0] = 110.0
    shares.add(share("b", ["v2"], 2))
    now[0] = 116.0  # a's share is 16 s old: a died
    merged = shares.merged("p")
    assert merged is not None and [v.id for v in merged.viewers] == ["v2"]
    now[0] = 126.0
    assert shares.merged("p") is None
    shares.add(share("b", ["v2"], 3))
    shares.forget("p")
    assert shares.merged("p") is None
