"""A source back after a loss is kept off program until it has delivered for the clear time."""

from __future__ import annotations

from typing import Any

from services.mixer.feeds import FeedSet


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def feed_set(clock: FakeClock) -> FeedSet:
    none: Any = None
    return FeedSet(none, none, 25, "t", 5.0, lambda *_: None, clock, hold_s=0.5, clear_s=3.0)


def deliver(feeds: FeedSet, clock: FakeClock, source: str, seconds: float) -> None:
    """Frames every 40 ms for `seconds`."""
    for _ in range(round(seconds / 0.04)):
        clock.now += 0.04
        feeds._seen(source, clock.now)


def test_first_arrival_is_not_held_back() -> None:
    clock = FakeClock()
    feeds = feed_set(clock)
    deliver(feeds, clock, "gz", 0.2)
    assert not feeds.clearing("gz")


def test_return_after_loss_clears_after_three_seconds_of_steady_frames() -> None:
    clock = FakeClock()
    feeds = feed_set(clock)
    deliver(feeds, clock, "gz", 1.0)
    clock.now += 1.0  # lost (longer than the hold time)
    deliver(feeds, clock, "gz", 2.9)
    assert feeds.clearing("gz")
    deliver(feeds, clock, "gz", 0.2)
    assert not feeds.clearing("gz")
    assert "gz" not in feeds.returned


def test_a_short_gap_within_the_hold_time_is_not_a_loss() -> None:
    clock = FakeClock()
    feeds = feed_set(clock)
    deliver(feeds, clock, "gz", 1.0)
    clock.now += 0.3
    deliver(feeds, clock, "gz", 0.1)
    assert not feeds.clearing("gz")


def test_flapping_restarts_the_clear_time_at_every_return() -> None:
    clock = FakeClock()
    feeds = feed_set(clock)
    deliver(feeds, clock, "gz", 1.0)
    for _ in range(10):  # 1 s off, 1 s on: never steady for 3 s
        clock.now += 1.0
        deliver(feeds, clock, "gz", 1.0)
        assert feeds.clearing("gz")
    deliver(feeds, clock, "gz", 2.1)  # now steady: 1 + 2.1 s > 3 s since its last return
    assert not feeds.clearing("gz")
