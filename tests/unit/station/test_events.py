"""The station client's event-stream reading: the SSE format, StationEvents, the follower."""

from __future__ import annotations

import pytest

from services.common.bus import encode
from services.common.gen.baycast.v1 import exchange_pb2
from services.station.events import (
    SseEvent,
    SseParser,
    StationEventStream,
    StationFollower,
    config_url,
    sse_to_station_event,
)

STREAM = (
    "retry: 2000\n"
    "\n"
    ": keepalive\n"
    "event: tally\n"
    'data: {"tally": {"production": "show", "program": true}}\n'
    "\n"
    "data: first line\n"
    "data:second line\n"
    "data\n"
    "id: 7\n"
    "\n"
    "event: ignored-without-data\n"
    "\n"
    "data:  two spaces keep one\n"
    "\n"
)
EXPECTED = [
    SseEvent("tally", '{"tally": {"production": "show", "program": true}}', ""),
    SseEvent("message", "first line\nsecond line\n", "7"),
    SseEvent("message", " two spaces keep one", "7"),
]


def feed_all(parser: SseParser, chunks: list[str]) -> list[SseEvent]:
    return [event for chunk in chunks for event in parser.feed(chunk)]


def test_whole_stream_parses_into_events_and_retry() -> None:
    parser = SseParser()
    assert parser.feed(STREAM) == EXPECTED
    assert parser.retry_ms == 2000
    assert parser.last_event_id == "7"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13])
def test_chunks_split_anywhere_give_the_same_events(size: int) -> None:
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert feed_all(SseParser(), chunks) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 4, 1000])
@pytest.mark.parametrize("newline", ["\r\n", "\r", "\n"])
def test_every_line_ending_in_chunks_of_any_size(newline: str, size: int) -> None:
    text = STREAM.replace("\n", newline)
    chunks = [text[i : i + size] for i in range(0, len(text), size)]
    assert feed_all(SseParser(), chunks) == EXPECTED


def test_crlf_split_across_chunks_is_one_line_end() -> None:
    parser = SseParser()
    assert parser.feed("data: a\r") == []
    assert parser.feed("\n\r") == [SseEvent("message", "a")]
    # That CR ended an empty line already: the LF after it must not end another one.
    assert parser.feed("\ndata: b\r\n\r\n") == [SseEvent("message", "b")]


def test_bom_comments_bad_retry_and_unfinished_event() -> None:
    parser = SseParser()
    events = parser.feed("\ufeffdata: x\n\n:comment: with colon\nretry: 1.5\nretry: soon\n")
    assert events == [SseEvent("message", "x")]
    assert parser.retry_ms is None
    assert parser.feed("data: not yet dispatched") == []
    assert parser.feed("\n\n") == [SseEvent("message", "not yet dispatched")]


def test_station_events_from_either_json_spelling() -> None:
    cue = exchange_pb2.Cue(id="c1", production="show", station="gz", text="30 秒后上场")
    cue.countdown_to_us = 1_700_000_000_000_000
    camel = SseEvent("cue", encode(exchange_pb2.StationEvent(cue=cue)).decode())
    snake = SseEvent(
        "cue", '{"cue": {"id": "c1", "countdown_to_us": "1700000000000000", "future": 1}}'
    )
    assert sse_to_station_event(camel) == exchange_pb2.StationEvent(cue=cue)
    parsed = sse_to_station_event(snake)
    assert parsed is not None and parsed.cue.countdown_to_us == 1_700_000_000_000_000
    assert sse_to_station_event(SseEvent("message", "not json")) is None
    assert sse_to_station_event(SseEvent("message", "{}")) is None


def test_config_url_follows_the_whip_url() -> None:
    assert config_url("http://127.0.0.1:8101/whip/gz") == (
        "http://127.0.0.1:8101/station/gz/config.json"
    )
    assert config_url("https://edge.example.org/ingest/whip/sz") == (
        "https://edge.example.org/ingest/station/sz/config.json"
    )
    with pytest.raises(ValueError):
        config_url("https://edge.example.org/whep/show/program")


def event(**kw: object) -> exchange_pb2.StationEvent:
    return exchange_pb2.StationEvent(**kw)  # type: ignore[arg-type]


def test_follower_keeps_state_and_picks_the_newest_open_cue() -> None:
    follower = StationFollower(StationEventStream("http://x", "gz", "t"))
    feeds = [exchange_pb2.ExchangeFeed(production="a"), exchange_pb2.ExchangeFeed(production="b")]
    follower.apply(event(hello=exchange_pb2.StationExchange(station="gz", feeds=feeds)))
    follower.apply(event(tally=exchange_pb2.StationTally(production="a", preview=True)))
    follower.apply(event(tally=exchange_pb2.StationTally(production="b", program=True)))
    assert follower.on_air and follower.tally == {"a": (False, True), "b": (True, False)}
    follower.apply(event(talkback=exchange_pb2.Talkback(production="a", active=True)))
    assert follower.talking == {"a": True}
    old = exchange_pb2.Cue(id="c1", production="a", text="old", sent_at_us=1)
    new = exchange_pb2.Cue(id="c2", production="a", text="new", sent_at_us=2)
    follower.apply(event(cue=old))
    follower.apply(event(cue=new))
    assert follower.newest_open_cue() == new
    done = exchange_pb2.Cue(id="c2", production="a", sent_at_us=2, acknowledged_at_us=3)
    follower.apply(event(cue=done))
    assert follower.newest_open_cue() == old
    follower.apply(event(cue=exchange_pb2.Cue(id="c1", production="a", cleared=True)))
    assert follower.newest_open_cue() is None and set(follower.cues) == {"c2"}
    # A hello without production b: b's tally goes with it.
    follower.apply(event(hello=exchange_pb2.StationExchange(station="gz", feeds=feeds[:1])))
    assert follower.tally == {"a": (False, True)} and not follower.on_air
