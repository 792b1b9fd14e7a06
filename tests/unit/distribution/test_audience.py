from __future__ import annotations

from services.distribution.audience import Audience


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_viewers_are_distinct_sessions_within_the_window() -> None:
    clock = Clock()
    audience = Audience(30.0, clock)
    audience.touch("qihang", "a")
    audience.touch("qihang", "a")
    audience.touch("qihang", "b")
    audience.touch("other", "a")
    assert audience.viewers("qihang") == 2 and audience.viewers("other") == 1
    clock.now += 20
    audience.touch("qihang", "b")
    clock.now += 15  # a was last seen 35 s ago, b 15 s ago
    assert audience.viewers("qihang") == 1
    clock.now += 20
    assert audience.viewers("qihang") == 0
    assert audience.viewers("nobody") == 0
