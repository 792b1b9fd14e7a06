"""The fan-out between a live encoding and its receivers: keyframes, overflow, paused inboxes."""

from __future__ import annotations

import asyncio

import av

from services.distribution.packet_fanout import Fanout, PacketInbox


def packet(n: int, *, key: bool = False) -> av.Packet:
    p = av.Packet(bytes([n % 256]) * 10)
    p.pts = n
    p.is_keyframe = key
    return p


def drain(inbox: PacketInbox) -> list[int]:
    out = []
    while len(inbox):
        got = asyncio.run(inbox.get())
        assert got is not None and got.pts is not None
        out.append(got.pts)
    return out


def test_every_inbox_gets_the_same_packet_and_video_starts_on_a_keyframe() -> None:
    fanout = Fanout()
    video = fanout.add(PacketInbox(video=True))
    audio = fanout.add(PacketInbox(video=False))
    fanout.add(video)  # twice: still one receiver
    assert len(fanout) == 2
    sent = [packet(0), packet(1, key=True), packet(2)]
    for p in sent:
        fanout.publish(p)
    assert drain(video) == [1, 2]
    assert drain(audio) == [0, 1, 2]
    assert fanout.packets == 3 and fanout.bytes == 30


def test_a_paused_inbox_counts_as_a_receiver_but_takes_nothing_until_resumed() -> None:
    fanout = Fanout()
    inbox = fanout.add(PacketInbox(video=True, paused=True))
    assert len(fanout) == 1
    fanout.publish(packet(0, key=True))
    fanout.publish(packet(1))
    assert len(inbox) == 0 and inbox.dropped == 0
    inbox.resume()
    fanout.publish(packet(2))  # resumed video starts on the next keyframe
    fanout.publish(packet(3, key=True))
    fanout.publish(packet(4))
    assert drain(inbox) == [3, 4]


def test_resume_drops_what_waited() -> None:
    inbox = PacketInbox(video=False)
    inbox.put(packet(0))
    inbox.resume()
    inbox.put(packet(1))
    assert drain(inbox) == [1]


def test_a_full_video_inbox_drops_to_the_next_keyframe_and_asks_for_one() -> None:
    asked: list[int] = []
    inbox = PacketInbox(video=True, max_packets=3, on_overflow=lambda: asked.append(1))
    inbox.put(packet(0, key=True))
    inbox.put(packet(1))
    inbox.put(packet(2))
    inbox.put(packet(3))  # overflow on a delta frame: everything goes, a keyframe is asked for
    assert len(inbox) == 0 and inbox.dropped == 4 and asked == [1]
    assert inbox.waiting_for_keyframe
    inbox.put(packet(4))
    inbox.put(packet(5, key=True))
    assert drain(inbox) == [5]


def test_a_full_audio_inbox_loses_its_oldest() -> None:
    inbox = PacketInbox(video=False, max_packets=2)
    for n in range(4):
        inbox.put(packet(n))
    assert drain(inbox) == [2, 3] and inbox.dropped == 2


async def test_closing_wakes_the_reader_with_none() -> None:
    fanout = Fanout()
    inbox = fanout.add(PacketInbox(video=False))
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    fanout.close()
    assert await asyncio.wait_for(reader, 1) is None
    assert len(fanout) == 0
