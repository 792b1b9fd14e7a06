"""Protobuf message descriptors as JSON Schema (draft 2020-12, the dialect of OpenAPI 3.1).

The schemas describe the canonical proto3 JSON mapping, the one `services.common.bus.encode`
writes and the control room accepts (`canonical_json.py` checks a body against the same
descriptors, so the document and the checks cannot disagree):

    field names        lowerCamelCase (`durationMs`); unknown names are refused
    enums              their value names, as strings
    int64, uint64 ...  decimal strings (written so; numbers are accepted too)
    int32, uint32 ...  integers within the type's range
    float, double      numbers, or "NaN", "Infinity", "-Infinity"
    bytes              base64 strings
    repeated           arrays; maps: objects (keys are strings)
    oneof              at most one of its fields; proto3 `optional` fields are plain fields

Each message becomes one named schema (`baycast.v1.MixerCommand.Cut`), referenced where used, so
recursive messages work and the OpenAPI document lists every message once.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any, cast

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor, OneofDescriptor
from google.protobuf.message import Message

Schema = dict[str, Any]

COMPONENTS = "#/components/schemas/"
INT32 = (-(2**31), 2**31 - 1)
UINT32 = (0, 2**32 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT64 = (0, 2**64 - 1)
NON_FINITE = ("NaN", "Infinity", "-Infinity")
INT64_PATTERN = r"^-?(0|[1-9][0-9]*)$"
UINT64_PATTERN = r"^(0|[1-9][0-9]*)$"

F = FieldDescriptor
SIGNED_32 = {F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32}
UNSIGNED_32 = {F.TYPE_UINT32, F.TYPE_FIXED32}
SIGNED_64 = {F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64}
UNSIGNED_64 = {F.TYPE_UINT64, F.TYPE_FIXED64}
FLOATS = {F.TYPE_FLOAT, F.TYPE_DOUBLE}


def descriptor_of(message_type: type[Message]) -> Descriptor:
    return cast(Descriptor, message_type.DESCRIPTOR)


def message_of(field: FieldDescriptor) -> Descriptor:
    if field.message_type is None:
        raise ValueError(f"{field.full_name} is not a message field")
    return field.message_type


def enum_of(field: FieldDescriptor) -> EnumDescriptor:
    if field.enum_type is None:
        raise ValueError(f"{field.full_name} is not an enum field")
    return field.enum_type


def is_map(field: FieldDescriptor) -> bool:
    return (
        field.type == F.TYPE_MESSAGE
        and field.is_repeated
        and bool(message_of(field).GetOptions().map_entry)
    )


def is_synthetic(oneof: OneofDescriptor) -> bool:
    """The oneof protoc makes for a proto3 `optional` field (`_gain_db`): not a real choice."""
    fields = list(oneof.fields)
    return len(fields) == 1 and oneof.name == "_" + fields[0].name and fields[0].has_presence


def real_oneofs(descriptor: Descriptor) -> list[OneofDescriptor]:
    return [o for o in descriptor.oneofs if not is_synthetic(o)]


def enum_names(enum: EnumDescriptor) -> list[str]:
    return [v.name for v in enum.values]


class SchemaBook:
    """Named schemas of messages and enums, filled in as they are referenced."""

    def __init__(self, prefix: str = COMPONENTS) -> None:
        self.prefix = prefix
        self.schemas: dict[str, Schema] = {}

    def ref(self, descriptor: Descriptor) -> Schema:
        """A `$ref` to the message's schema (added to the book on first use)."""
        name = descriptor.full_name
        if name.startswith("google.protobuf."):
            raise ValueError(f"no JSON schema for the well-known type {name}")
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder: a message may contain itself
            self.schemas[name] = self.message(descriptor)
        return {"$ref": self.prefix + name}

    def enum_ref(self, enum: EnumDescriptor) -> Schema:
        name = enum.full_name
        if name not in self.schemas:
            self.schemas[name] = {
                "type": "string",
                "enum": enum_names(enum),
                "description": f"{name}, by value name",
            }
        return {"$ref": self.prefix + name}

    def message(self, descriptor: Descriptor) -> Schema:
        schema: Schema = {
            "type": "object",
            "description": f"{descriptor.full_name} (canonical proto3 JSON)",
            "properties": {f.json_name: self.field(f) for f in descriptor.fields},
            "additionalProperties": False,
        }
        exclusive = [
            {"not": {"required": [a.json_name, b.json_name]}}
            for oneof in real_oneofs(descriptor)
            for a, b in combinations(oneof.fields, 2)
        ]
        if exclusive:
            schema["allOf"] = exclusive
        return schema

    def field(self, field: FieldDescriptor) -> Schema:
        if is_map(field):
            value = message_of(field).fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.singular(value)}
        if field.is_repeated:
            return {"type": "array", "items": self.singular(field)}
        return self.singular(field)

    def singular(self, field: FieldDescriptor) -> Schema:
        kind = field.type
        if kind == F.TYPE_MESSAGE:
            return self.ref(message_of(field))
        if kind == F.TYPE_ENUM:
            return self.enum_ref(enum_of(field))
        if kind == F.TYPE_STRING:
            return {"type": "string"}
        if kind == F.TYPE_BYTES:
            return {"type": "string", "contentEncoding": "base64"}
        if kind == F.TYPE_BOOL:
            return {"type": "boolean"}
        if kind in SIGNED_32 | UNSIGNED_32:
            low, high = INT32 if kind in SIGNED_32 else UINT32
            return {"type": "integer", "minimum": low, "maximum": high}
        if kind in SIGNED_64 | UNSIGNED_64:
            low, high = INT64 if kind in SIGNED_64 else UINT64
            pattern = INT64_PATTERN if kind in SIGNED_64 else UINT64_PATTERN
            return {
                "anyOf": [
                    {"type": "string", "pattern": pattern},
                    {"type": "integer", "minimum": low, "maximum": high},
                ],
                "description": "a 64-bit integer: written as a decimal string",
            }
        if kind in FLOATS:
            return {"anyOf": [{"type": "number"}, {"type": "string", "enum": list(NON_FINITE)}]}
        raise ValueError(f"no JSON schema for field {field.full_name} of type {kind}")


def require_one(descriptor: Descriptor, oneof: str) -> Schema:
    """A schema that holds when exactly one field of `oneof` is present (a command's verb)."""
    fields = descriptor.oneofs_by_name[oneof].fields
    return {"anyOf": [{"required": [f.json_name]} for f in fields]}
