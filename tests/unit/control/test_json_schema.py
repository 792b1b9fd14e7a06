"""The descriptor -> JSON Schema converter, and the body check that applies the same rules."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from services.common import errors
from services.common.gen.baycast.v1 import (
    distribution_pb2,
    exchange_pb2,
    graphics_pb2,
    mixer_pb2,
    rundown_pb2,
)
from services.control import canonical_json
from services.control.json_schema import COMPONENTS, SchemaBook, descriptor_of, require_one

Cmd = mixer_pb2.MixerCommand


def schemas(*types: Any) -> dict[str, dict[str, Any]]:
    book = SchemaBook()
    for t in types:
        book.ref(descriptor_of(t))
    return book.schemas


def validator(message_type: Any) -> jsonschema.Draft202012Validator:
    """A validator of the message's schema, its references resolved as in the OpenAPI document."""
    book = SchemaBook()
    root = book.ref(descriptor_of(message_type))
    return jsonschema.Draft202012Validator({**root, "components": {"schemas": book.schemas}})


def test_scalars_enums_and_64_bit_integers_follow_the_proto3_json_mapping() -> None:
    s = schemas(mixer_pb2.MixerState, distribution_pb2.OutputSpec)
    audio = s["baycast.v1.SourceAudio"]["properties"]
    assert audio["gainDb"] == {
        "anyOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]
    }
    assert audio["mute"] == {"type": "boolean"}
    assert audio["source"] == {"type": "string"}
    assert s["baycast.v1.MixerState"]["properties"]["timeUs"]["anyOf"][0] == {
        "type": "string",
        "pattern": r"^-?(0|[1-9][0-9]*)$",
    }
    transition = s["baycast.v1.Transition"]["properties"]
    assert transition["durationMs"] == {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    # Enums by name, as their own named schema.
    assert s["baycast.v1.OutputSpec"]["properties"]["kind"] == {
        "$ref": COMPONENTS + "baycast.v1.OutputKind"
    }
    assert s["baycast.v1.OutputKind"]["enum"][:2] == ["OUTPUT_KIND_UNSPECIFIED", "OUTPUT_KIND_RTMP"]
    # lowerCamelCase names only, nothing else.
    assert "duration_ms" not in transition
    assert s["baycast.v1.Transition"]["additionalProperties"] is False


def test_repeated_maps_nested_messages_and_oneofs() -> None:
    s = schemas(Cmd, mixer_pb2.MixerState)
    talk = s["baycast.v1.MixerCommand.Talk"]["properties"]
    assert talk["stations"] == {"type": "array", "items": {"type": "string"}}
    showing = s["baycast.v1.MixerState"]["properties"]["showing"]
    assert showing == {"type": "object", "additionalProperties": {"type": "string"}}
    assert s["baycast.v1.MixerCommand"]["properties"]["cut"] == {
        "$ref": COMPONENTS + "baycast.v1.MixerCommand.Cut"
    }
    # At most one verb: every pair excluded.
    verbs = len(descriptor_of(Cmd).oneofs_by_name["command"].fields)
    pairs = s["baycast.v1.MixerCommand"]["allOf"]
    assert len(pairs) == verbs * (verbs - 1) // 2
    assert {"not": {"required": ["take", "cut"]}} in pairs
    # proto3 `optional` fields make synthetic oneofs: they are plain fields, not choices.
    assert "allOf" not in s["baycast.v1.MixerCommand.Audio"]
    assert require_one(descriptor_of(Cmd), "command")["anyOf"][1] == {"required": ["cut"]}


def test_every_message_the_api_uses_converts_and_is_a_valid_schema() -> None:
    book_schemas = schemas(
        Cmd,
        mixer_pb2.MixerState,
        rundown_pb2.RundownCommand,
        rundown_pb2.RundownStatus,
        graphics_pb2.GfxCommand,
        graphics_pb2.GfxReply,
        distribution_pb2.DistCommand,
        distribution_pb2.DistReply,
        exchange_pb2.ExchangeCommand,
        exchange_pb2.ExchangeReply,
    )
    # RundownCommand reaches into mixer and graphics messages through its segments.
    assert "baycast.v1.GfxShow" in book_schemas and "baycast.v1.Layout" in book_schemas
    for schema in book_schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize(
    ("body", "valid"),
    [
        ({"cut": {"source": "sz"}}, True),
        ({"audio": {"source": "gz", "gainDb": -6.5, "mute": False}}, True),
        ({"audio": {"gainDb": "-Infinity"}}, True),
        ({"ftb": {"durationMs": 500}}, True),
        ({"ftb": {"durationMs": 500.0}}, True),
        ({"talk": {"stations": ["gz", "sz"], "on": True}}, True),
        ({"layout": {"layout": {"kind": "quad", "boxes": [{"x": 0.5, "z": -1}]}}}, True),
        ({}, True),
        ({"cut": {"source": None}}, False),  # protobuf would take null as ""
        ({"cut": {}, "take": {}}, False),
        ({"ftb": {"durationMs": "5"}}, False),  # protobuf would take the string
        ({"ftb": {"durationMs": -1}}, False),
        ({"ftb": {"durationMs": 5.5}}, False),
        ({"ftb": {"on": 1}}, False),
        ({"audio": {"gainDb": True}}, False),  # protobuf would take true as 1.0
        ({"audio": {"gainDb": "loud"}}, False),
        ({"audio": {"gain_db": 2}}, False),
        ({"talk": {"stations": "gz"}}, False),
        ({"talk": {"stations": [None]}}, False),
        ({"talk": []}, False),  # protobuf would take [] for a message
        ({"cut": "sz"}, False),
        ({"dance": {}}, False),
        ([], False),
        ("cut", False),
    ],
)
def test_the_body_check_agrees_with_the_schema(body: Any, valid: bool) -> None:
    assert validator(Cmd).is_valid(body) is valid
    if valid:
        canonical_json.check(body, descriptor_of(Cmd))
    else:
        with pytest.raises(errors.InvalidArgument):
            canonical_json.check(body, descriptor_of(Cmd))


def test_64_bit_integers_and_enums_in_the_body_check() -> None:
    cue = exchange_pb2.ExchangeCommand
    assert validator(cue).is_valid({"cue": {"countdownToUs": "1796283996707790"}})
    parsed = canonical_json.parse(b'{"cue": {"countdownToUs": "1796283996707790"}}', cue)
    assert parsed.cue.countdown_to_us == 1796283996707790
    parsed = canonical_json.parse(b'{"cue": {"countdownToUs": 5}}', cue)
    assert parsed.cue.countdown_to_us == 5
    for bad in (b'{"cue": {"countdownToUs": "5.0"}}', b'{"cue": {"countdownToUs": "1e3"}}'):
        with pytest.raises(errors.InvalidArgument) as refused:
            canonical_json.parse(bad, cue)
        assert refused.value.field == "cue.countdownToUs"
    dist = distribution_pb2.DistCommand
    ok = canonical_json.parse(b'{"add": {"output": {"id": "a", "kind": "OUTPUT_KIND_HLS"}}}', dist)
    assert ok.add.output.kind == distribution_pb2.OUTPUT_KIND_HLS
    with pytest.raises(errors.InvalidArgument) as refused:
        canonical_json.parse(b'{"add": {"output": {"kind": 4}}}', dist)
    assert refused.value.field == "add.output.kind"


def test_the_body_check_names_the_field_and_refuses_non_json() -> None:
    with pytest.raises(errors.InvalidArgument) as refused:
        canonical_json.parse(b'{"layout": {"layout": {"boxes": [{}, {"x": "left"}]}}}', Cmd)
    assert refused.value.field == "layout.layout.boxes[1].x"
    for body in (b"", b"{", b'{"cut": {}, "cut": {}}', b'{"audio": {"gainDb": NaN}}', b"\xff"):
        with pytest.raises(errors.InvalidArgument):
            canonical_json.parse(body, Cmd)
    assert canonical_json.parse(b'{"cut": {"source": "\\u6df1"}}', Cmd).cut.source == "深"
