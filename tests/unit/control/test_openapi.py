"""The OpenAPI document: valid OpenAPI 3.1, and built from the route table it documents."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from services.control import openapi
from services.control.routes import OPERATOR, PUBLIC, ROUTES
from services.control.show_state import EVENTS


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return openapi.document("0.1.0")


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    assert doc["components"]["securitySchemes"]["session"]["in"] == "cookie"


def test_every_route_of_the_table_and_nothing_else(doc: dict[str, Any]) -> None:
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == {(r.method, r.path) for r in ROUTES if r.document}
    for route in ROUTES:
        if not route.document:
            continue
        op = doc["paths"][route.path][route.method.lower()]
        assert op["operationId"] == route.handler
        assert set(op["responses"]) == {str(route.status), *map(str, route.error_statuses)}
        assert "400" in op["responses"]  # an unknown query parameter, at least
        for status, response in op["responses"].items():
            assert response["description"], (route.path, status)
        if route.auth == OPERATOR:
            assert op["security"] == [{"bearer": []}, {"session": []}]
            assert "401" in op["responses"] and "403" in op["responses"]
        else:
            assert op["security"] == []
        if route.auth == PUBLIC:
            assert "401" not in op["responses"]


def test_commands_take_their_message_with_exactly_one_verb(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/productions/{prod}/mixer"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    ref, verbs = body["allOf"]
    assert ref == {"$ref": "#/components/schemas/baycast.v1.MixerCommand"}
    assert {"required": ["cut"]} in verbs["anyOf"] and {"required": ["manual"]} in verbs["anyOf"]
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/baycast.v1.MixerState"
    }
    headers = {p["name"] for p in op["parameters"] if p["in"] == "header"}
    assert headers == {"Baycast-Command-Id", "Idempotency-Key", "X-CSRF-Token"}
    error = doc["components"]["schemas"]["Error"]
    assert error == {"$ref": "#/components/schemas/baycast.v1.ErrorReply"}


def test_the_event_stream_names_every_event_and_its_message(doc: dict[str, Any]) -> None:
    op = doc["paths"]["/api/events"]["get"]
    assert "text/event-stream" in op["responses"]["200"]["content"]
    events = op["x-events"]
    assert set(EVENTS) | {"gfx.scene", "hello", "snapshot"} == set(events)
    assert events["mixer.state"] == {"$ref": "#/components/schemas/baycast.v1.MixerState"}
    assert events["loudness"] == {"$ref": "#/components/schemas/baycast.v1.ProgramLoudness"}
    for ref in events.values():
        if "$ref" in ref:
            assert ref["$ref"].rsplit("/", 1)[1] in doc["components"]["schemas"]
