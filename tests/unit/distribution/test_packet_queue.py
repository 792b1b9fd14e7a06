from __future__ import annotations

from fractions import Fraction

from services.distribution.packet_queue import EncodedPacket, PacketQueue

TB = Fraction(1, 25)


def packet(n: int, *, key: bool = False, video: bool = True, size: int = 100) -> EncodedPacket:
    return EncodedPacket(video, bytes(size), n, n, key, TB)


def drain(q: PacketQueue) -> list[EncodedPacket]:
    out = []
    while (p := q.get(0)) is not None:
        out.append(p)
    return out


def test_a_closed_queue_discards_without_counting() -> None:
    q = PacketQueue(10, 10_000)
    q.put(packet(0, key=True))
    assert len(q) == 0 and q.dropped == 0


def test_an_open_queue_starts_on_a_keyframe() -> None:
    q = PacketQueue(10, 10_000)
    q.open()
    q.put(packet(0))
    q.put(packet(1, video=False))
    q.put(packet(2, key=True))
    q.put(packet(3))
    assert [q.get(0).pts for _ in range(2)] == [2, 3]  # type: ignore[union-attr]
    assert q.get(0) is None
    assert q.dropped == 0


def test_full_queue_drops_to_the_next_keyframe_and_counts_everything_dropped() -> None:
    q = PacketQueue(5, 1_000_000)
    q.open()
    q.put(packet(0, key=True))
    for n in range(1, 5):
        q.put(packet(n))
    assert len(q) == 5
    q.put(packet(5))  # overflow: the five waiting and this one go
    assert len(q) == 0 and q.dropped == 6
    q.put(packet(6))
    q.put(packet(7, video=False))
    assert q.dropped == 8 and len(q) == 0
    q.put(packet(8, key=True))
    q.put(packet(9))
    assert len(q) == 2 and q.dropped == 8
    assert q.get(0).pts == 8  # type: ignore[union-attr]


def test_a_keyframe_arriving_on_a_full_queue_is_kept() -> None:
    q = PacketQueue(3, 1_000_000)
    q.open()
    for n in range(3):
        q.put(packet(n, key=n == 0))
    q.put(packet(3, key=True))
    assert q.dropped == 3 and len(q) == 1


def test_the_byte_bound_holds() -> None:
    q = PacketQueue(1000, 1000)
    q.open()
    q.put(packet(0, key=True, size=400))
    q.put(packet(1, size=400))
    assert q.nbytes == 800
    q.put(packet(2, size=400))
    assert q.nbytes == 0 and q.dropped == 3


def test_close_empties_and_wakes() -> None:
    q = PacketQueue(10, 10_000)
    q.open()
    q.put(packet(0, key=True))
    q.close()
    assert len(q) == 0 and q.get(0.01) is None


def test_opening_starts_from_the_encoders_backlog() -> None:
    """A connection starts on the last keyframe sent (the backlog), not on the next one."""
    backlog = [packet(0, key=True), packet(1, video=False), packet(2), packet(3)]
    q = PacketQueue(100, 1 << 20)
    q.open(lambda: backlog)
    assert [p.pts for p in drain(q)] == [0, 1, 2, 3]


def test_a_backlog_without_a_keyframe_start_waits_for_one() -> None:
    q = PacketQueue(100, 1 << 20)
    q.open(lambda: [packet(1), packet(2)])
    q.put(packet(3))
    q.put(packet(4, key=True))
    assert [p.pts for p in drain(q)] == [4]


def test_packets_already_in_the_backlog_are_not_queued_twice() -> None:
    """The encoder adds each packet to the backlog before putting it: the newest packets of a
    backlog reach `put` again after `open` took them, and are skipped; the next one is not."""
    backlog = [packet(0, key=True), packet(1), packet(2)]
    q = PacketQueue(100, 1 << 20)
    q.open(lambda: backlog)
    q.put(backlog[-1])
    q.put(packet(3))
    q.put(packet(4))
    assert [p.pts for p in drain(q)] == [0, 1, 2, 3, 4]


def test_a_backlog_larger_than_the_queue_is_not_taken() -> None:
    q = PacketQueue(10, 350)
    q.open(lambda: [packet(0, key=True), packet(1), packet(2), packet(3)])  # 400 bytes
    q.put(packet(4))
    q.put(packet(5, key=True))
    assert [p.pts for p in drain(q)] == [5] and q.dropped == 0
