"""A running production takes a new definition without stopping its clock.

`ProductionCommand.update` stores the edited production; its owner sees the new revision in its
next lease round (within `lease_renew_seconds`) and applies it here, between two ticks (the tick
is synchronous, so a frame is made wholly before or wholly after the edit):

* sources: a new one gets its names, its audio input (silent until its audio comes), its
  mix-minus output (the handle `prod/<p>/mixminus/<id>` for its return) and its tally entry; it
  appears on the multiview from the next frame and may be cut to at once. A removed one loses
  them (its talkback ends); `check_edit` has refused removing what is on program;
* layouts, backups, hold, backup and clear times, audio defaults, the loudness control and the
  exchange policy are replaced (the switcher's state keeps its program, preview, layout and
  audio settings);
* the picture and sound format never change (the store refuses it).
"""

from __future__ import annotations

import contextlib

import structlog

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2
from services.mixer.clips import is_clip
from services.mixer.production import ProductionRunner
from services.mixer.productions import DEFAULT_CLEAR_MS, source_ids
from services.mixer.switcher import Switcher, reconcile

log = structlog.get_logger("mixer.live_edit")


def shown_sources(layout: mixer_pb2.Layout, program: str) -> set[str]:
    """The sources a layout on program names (its boxes' and list's), and the program source."""
    named = {program, *layout.sources, *(box.source for box in layout.boxes)}
    if layout.HasField("pip"):
        named.add(layout.pip.source)
    return named - {""}


def check_edit(
    old: mixer_pb2.Production, new: mixer_pb2.Production, state: mixer_pb2.SwitcherState | None
) -> None:
    """Refuse removing a source the program shows: the director cuts away first."""
    if state is None:
        return
    removed = set(source_ids(old)) - set(source_ids(new))
    on_air = removed & shown_sources(state.layout, state.program)
    if on_air:
        raise errors.Conflict(
            f"update.sources: {', '.join(sorted(on_air))} is on program; cut away first",
            field="update.sources",
        )


async def apply_edit(runner: ProductionRunner, p: mixer_pb2.Production) -> None:
    """Make the running production `p`."""
    before = list(runner.scenes.names)
    ids = source_ids(p)
    added = [s for s in ids if s not in runner.scenes.names]
    removed = [s for s in before if s not in ids]
    state = reconcile(runner.switcher.state, p)
    state.revision = runner.switcher.state.revision + (state != runner.switcher.state)
    # The synchronous part: between two ticks, the production is wholly the new one.
    runner.production = p
    runner.scenes.configure(p)
    runner.feeds.hold_s = runner.scenes.hold_s
    runner.feeds.clear_s = (p.clear_ms or DEFAULT_CLEAR_MS) / 1000
    runner.switcher = Switcher(p, state)
    runner.audio.set_sources(ids)
    runner.audio.configure(list(state.audio), state.master_gain_db)
    runner.audio.set_loudness(p.loudness)
    stations = [s for s in ids if not is_clip(s)]
    runner.talkback.set_stations(stations)
    runner.clips.set_sources(list(p.sources))
    gone, fresh = runner.outputs.set_stations(stations)
    runner.feeds.stop_audio(removed)
    runner.feeds.start_audio(added)
    # Then what waits on I/O.
    for output in gone:
        output.close()
        with contextlib.suppress(Exception):
            await runner.directory.withdraw(output.name, runner.endpoint)
    for output in fresh:
        await runner.directory.announce(output.name, runner.endpoint)
    await runner.save_state(state)
    await runner.publish_state()
    log.info("production_edited", production=p.id, added=added, removed=removed)
