"""Cues refused before anything is stored, the SSE wire format, the CLI's times and words."""

from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any, cast

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import exchange_pb2, ingest_pb2, mixer_pb2
from services.distribution import exchange_ctl
from services.distribution.cues import CueDesk
from services.distribution.station_events import sse

SendCue = exchange_pb2.ExchangeCommand.SendCue


class Mirror:
    def __init__(self, **values: Any) -> None:
        self.values = values

    def get(self, key: str) -> Any:
        return self.values.get(key)


def desk() -> CueDesk:
    prod = mixer_pb2.Production(
        id="qh",
        sources=[mixer_pb2.ProductionSource(id=s) for s in ("gz", "sz", "talk_zhang")],
    )
    stations = {s: ingest_pb2.Station(id=s) for s in ("gz", "sz", "fs")}
    # No bus and no bucket: a refused cue must not reach either.
    return CueDesk(cast(Any, None), cast(Any, None), stations.get, cast(Any, Mirror(qh=prod)))


@pytest.mark.parametrize(
    ("cue", "field"),
    [
        (SendCue(stations=["gz"], text=""), "cue.text"),
        (SendCue(stations=["gz"], text="   "), "cue.text"),
        (SendCue(stations=["gz"], text="x" * 201), "cue.text"),
        (SendCue(stations=["gz"], text="two\nlines"), "cue.text"),
        (SendCue(stations=["gz"], text="ok", countdown_to_us=1), "cue.countdown_to_us"),
        (
            SendCue(
                stations=["gz"],
                text="ok",
                countdown_to_us=time.time_ns() // 1000 + 25 * 3600 * 10**6,
            ),
            "cue.countdown_to_us",
        ),
        (SendCue(text="ok"), "cue.stations"),
        (SendCue(stations=["fs"], text="ok"), "cue.stations"),  # a station, not of this show
        (SendCue(stations=["talk_zhang"], text="ok"), "cue.stations"),  # a source, no station
        (SendCue(stations=["gz"], all=True, text="ok"), "cue.stations"),
    ],
)
async def test_a_cue_that_cannot_be_shown_is_refused_naming_the_field(
    cue: SendCue, field: str
) -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        await desk().send("qh", cue)
    assert refused.value.field == field


async def test_a_cue_to_an_unknown_production_is_not_found() -> None:
    with pytest.raises(errors.NotFound):
        await desk().send("nope", SendCue(stations=["gz"], text="ok"))


def test_an_event_is_one_sse_record_with_its_kind_and_one_line_of_json() -> None:
    event = exchange_pb2.StationEvent(
        cue=exchange_pb2.Cue(id="abc", station="gz", text="30 秒后上场 / 30 s to air")
    )
    assert sse(event) == (
        b'event: cue\ndata: {"cue": {"id": "abc", "station": "gz", '
        + '"text": "30 秒后上场 / 30 s to air"}}\n\n'.encode()
    )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    exchange_ctl.register(parser.add_subparsers(dest="verb"))
    return parser.parse_args(list(argv))


def test_cue_words_become_a_send_cue_with_a_countdown() -> None:
    before = time.time()
    args = parse("cue", "qh", "gz,sz", "30 秒后上场 / 30 s to air", "--in", "1m30s")
    command = exchange_ctl.build_cue(args)
    assert args.prod == "qh"
    assert list(command.cue.stations) == ["gz", "sz"] and not command.cue.all
    assert command.cue.text == "30 秒后上场 / 30 s to air"
    assert before + 90 <= command.cue.countdown_to_us / 1e6 <= time.time() + 90
    every = exchange_ctl.build_cue(parse("cue", "qh", "--all", "stand by"))
    assert every.cue.all and list(every.cue.stations) == [] and every.cue.countdown_to_us == 0


def test_at_is_today_in_shanghai_unless_told_otherwise() -> None:
    now = dt.datetime(2025, 3, 5, 5, 0, tzinfo=dt.UTC)  # 13:00 in Guangzhou
    at = exchange_ctl.countdown_us(None, "14:00:00", "Asia/Shanghai", now)
    assert at == int(dt.datetime(2025, 3, 5, 6, 0, tzinfo=dt.UTC).timestamp() * 1_000_000)
    utc = exchange_ctl.countdown_us(None, "14:00", "UTC", now)
    assert utc == int(dt.datetime(2025, 3, 5, 14, 0, tzinfo=dt.UTC).timestamp() * 1_000_000)
    with pytest.raises(errors.InvalidArgument):
        exchange_ctl.countdown_us(None, "25:00", "Asia/Shanghai", now)


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("90", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert exchange_ctl.parse_duration(text) == seconds


def test_a_duration_that_is_none_is_refused() -> None:
    for text in ("", "soon", "30x"):
        with pytest.raises(argparse.ArgumentTypeError):
            exchange_ctl.parse_duration(text)
