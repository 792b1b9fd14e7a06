"""Command JSON fuzzing, bounded: the control room's real command bodies replayed and accepted,
the regression seeds refused as 400s, then bodies drawn from every command's descriptor from a
fixed seed (tests/fuzz/run.py says how to run long).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common import errors
from services.common.bus import encode
from services.control import canonical_json
from tests.fuzz import command_json
from tests.fuzz.run import corpus, fuzz_hypothesis, long_seconds

REGRESSION = "--regression-"  # bodies that once escaped as a 500: refused now, with this reason
REASONS = {
    "nested-3000-deep": "nested too deeply",
    "integer-of-4301-digits": "too many digits",
    "double-over-1e308": "must be a number",
}


def _seeds(regression: bool) -> list[Path]:
    return [p for p in corpus("command_json") if (REGRESSION in p.name) == regression]


@pytest.mark.parametrize("path", _seeds(regression=False), ids=lambda p: p.name)
def test_real_command_bodies_are_accepted_and_round_trip(path: Path) -> None:
    message_type, body = command_json.seed_body(path)
    message = canonical_json.parse(body, message_type)
    verb = message.DESCRIPTOR.fields_by_name[message.WhichOneof("command")].json_name
    assert verb == path.stem.split("--")[1].split("-")[0]
    command_json.command_body((message_type, body))
    assert canonical_json.parse(encode(message), message_type) == message


@pytest.mark.parametrize("path", _seeds(regression=True), ids=lambda p: p.name)
def test_regressions_are_refused_with_the_reason(path: Path) -> None:
    message_type, body = command_json.seed_body(path)
    with pytest.raises(errors.InvalidArgument, match=REASONS[path.stem.split(REGRESSION)[1]]):
        canonical_json.parse(body, message_type)
    command_json.command_body((message_type, body))


def test_drawn_bodies_are_refused_or_round_trip() -> None:
    drawn = fuzz_hypothesis("command_json", seconds=long_seconds())
    assert drawn >= 1
