"""A token bucket per client address, so one client cannot flood an unauthenticated route.

WHIP and WHEP offers, and the control room's logins, each take a token before anything else is
looked at. Each address holds up to `burst` tokens, refilled at `rate_per_s`. The table
of addresses is bounded: buckets that have refilled completely are forgotten (they hold nothing a
fresh bucket would not), and past `max_clients` the oldest are dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_RATE_PER_S = 5.0
DEFAULT_BURST = 20
MAX_CLIENTS = 10_000


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float = DEFAULT_RATE_PER_S,
        burst: int = DEFAULT_BURST,
        *,
        max_clients: int = MAX_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self.max_clients = max_clients
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str) -> float:
        """Take a token for `client`: 0 if allowed, else the seconds until one is available."""
        now = self.clock()
        self._forget_full(now)
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate_per_s)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate_per_s
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def _forget_full(self, now: float) -> None:
        """Drop buckets, oldest first, that have refilled to `burst` by now."""
        refill_s = self.burst / self.rate_per_s
        while self._buckets:
            client, (_tokens, at) = next(iter(self._buckets.items()))
            if now - at < refill_s:
                break
            del self._buckets[client]
