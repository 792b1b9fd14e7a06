"""A production's exchange state across distribution replicas.

WHEP viewers connect to whichever distribution replica a load balancer picks, so each replica
publishes `prod.<p>.exchange.state` with its own viewers (`ExchangeState.instance`). A reader
(the control room's state, a replica answering `ListViewers`) keeps each replica's newest share
and merges them: the viewers of every share heard from within `STALE_S`, the cues (kept in a
shared bucket, the same on every replica) of the newest. A replica that died stops publishing,
and its viewers leave the merged state once its share is older than `STALE_S` (three of its
5 s rounds).
"""

from __future__ import annotations

import time

from services.common.gen.baycast.v1 import exchange_pb2

STALE_S = 15.0


class ExchangeShares:
    def __init__(self, stale_s: float = STALE_S) -> None:
        self.stale_s = stale_s
        # production -> instance -> (its newest share, when it arrived)
        self._shares: dict[str, dict[str, tuple[exchange_pb2.ExchangeState, float]]] = {}

    def add(self, state: exchange_pb2.ExchangeState) -> None:
        shares = self._shares.setdefault(state.production, {})
        shares[state.instance] = (state, time.monotonic())

    def forget(self, production: str) -> None:
        self._shares.pop(production, None)

    def merged(self, production: str) -> exchange_pb2.ExchangeState | None:
        """Every fresh share's viewers and the newest share's cues; None before any share."""
        shares = self._shares.get(production)
        if not shares:
            return None
        now = time.monotonic()
        for instance, (_, arrived) in list(shares.items()):
            if now - arrived > self.stale_s:
                del shares[instance]
        if not shares:
            return None
        newest = max((s for s, _ in shares.values()), key=lambda s: s.time_us)
        out = exchange_pb2.ExchangeState(
            production=production, cues=newest.cues, time_us=newest.time_us
        )
        for instance in sorted(shares):
            out.viewers.extend(shares[instance][0].viewers)
        return out
