"""A production's handles (mix-minus per station) and its events (sent when something moved)."""

from __future__ import annotations

from google.protobuf.message import Message

from services.common.gen.baycast.v1 import media_pb2, mixer_pb2
from services.mixer.production_events import ProductionEvents
from services.mixer.production_outputs import ProductionOutputs


def test_a_mix_minus_handle_for_each_station_and_no_other() -> None:
    outputs = ProductionOutputs("p", 128, 72, 25, 4)
    gone, fresh = outputs.set_stations(["gz", "sz"])
    assert gone == [] and [o.name for o in fresh] == ["prod/p/mixminus/gz", "prod/p/mixminus/sz"]
    assert outputs["mixminus/gz"] is fresh[0] and outputs.get("program") is not None
    gone, fresh = outputs.set_stations(["sz", "fs"])
    assert [o.name for o in gone] == ["prod/p/mixminus/gz"]
    assert [o.name for o in fresh] == ["prod/p/mixminus/fs"]
    assert sorted(o.name for o in outputs.all()) == [
        "prod/p/clean",
        "prod/p/mixminus/fs",
        "prod/p/mixminus/sz",
        "prod/p/multiview",
        "prod/p/preview",
        "prod/p/program",
    ]
    assert outputs.minus_wanted() == set()
    outputs["mixminus/fs"].add(media_pb2.Rendition(no_video=True))  # a station's return
    assert outputs.minus_wanted() == {"fs"}


class _Bus:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Message]] = []

    async def publish(self, subject: str, message: Message) -> None:
        self.sent.append((subject, message))


async def test_tally_and_state_go_out_when_they_move_and_not_every_tick() -> None:
    bus, states = _Bus(), []

    async def publish_state() -> None:
        states.append(len(bus.sent))

    events = ProductionEvents(bus, "p", mixer_pb2.Tally(), publish_state)  # type: ignore[arg-type]
    on_gz = mixer_pb2.Tally(sources=[mixer_pb2.TallyEntry(source="gz", program=True)])
    for _tick in range(3):
        events.update_tally(mixer_pb2.Tally(sources=on_gz.sources))
        events.update_showing({"gz": "live"})
        await events.flush()
    assert [s for s, _m in bus.sent] == ["baycast.v1.prod.p.tally"]
    assert bus.sent[0][1].time_us > 0  # stamped when it moved
    assert len(states) == 2  # the tally's, then the showing's (both on the first tick)
    events.update_showing({"gz": "held"})  # a frame late is still live: no news
    await events.flush()
    assert len(states) == 2
    events.update_showing({"gz": "slate"})
    events.levels(mixer_pb2.AudioLevels(production="p"))
    await events.flush()
    assert len(states) == 3 and bus.sent[-1][0] == "baycast.v1.prod.p.mixer.levels"
