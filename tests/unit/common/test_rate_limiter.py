"""The WHIP offer token bucket: burst, refill, per address, bounded memory."""

from __future__ import annotations

from services.common.rate_limiter import RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refused_until_refilled() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, 20, clock=clock)
    assert [limiter.take("a") for _ in range(20)] == [0.0] * 20
    wait = limiter.take("a")
    assert 0.19 <= wait <= 0.21
    clock.now += 0.2
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_addresses_have_their_own_buckets() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 2, clock=clock)
    assert limiter.take("a") == 0.0 and limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    assert limiter.take("b") == 0.0


def test_200_offers_in_10_s_mostly_refused() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, 20, clock=clock)
    allowed = 0
    for _ in range(200):
        allowed += limiter.take("a") == 0.0
        clock.now += 0.05
    assert 69 <= allowed <= 70  # the burst plus ~10 s of refill


def test_table_is_bounded() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5.0, 20, max_clients=100, clock=clock)
    for i in range(1000):
        limiter.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limiter) == 100
    clock.now += 4.0  # every bucket has refilled: nothing left to remember
    limiter.take("x")
    assert len(limiter) == 1
