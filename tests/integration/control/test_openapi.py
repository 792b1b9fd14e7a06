"""The served OpenAPI document, and a property-based run of the API against a real show.

Schemathesis generates requests from the document: invalid ones (negative mode) must be refused
with a documented 4xx, never reach the show (the switcher and the as-run log stay as they were);
valid ones (positive mode) must get documented answers whose bodies match their schemas. No
request may get a 5xx. Operations whose services do not run in this test (graphics,
distribution, monitoring) get only invalid requests; the event stream never ends, so it is left
out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import hypothesis
import schemathesis
from hypothesis import HealthCheck, Phase
from openapi_spec_validator import validate
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from services.common.bus import Bus
from services.common.gen.baycast.v1 import mixer_pb2
from services.common.lifecycle import VERSION
from services.control import openapi
from services.control.service import ControlService
from services.mixer.switcher import Switcher
from tests.integration.control.conftest import AddOperator, Show, base_url
from tests.support.mixer import command

Cmd = mixer_pb2.MixerCommand
# The event stream never ends; monitoring and graphics do not run here, and an operation with
# nothing to make invalid gets valid requests even in negative mode.
NEVER = {"GET /api/events", "GET /api/alerts", "GET /api/graphics/templates"}
# Commands to services that do not run here: only invalid ones (refused before the bus).
NOT_RUNNING_HERE = {
    "POST /api/productions/{prod}/graphics",
    "POST /api/productions/{prod}/outputs",
    "POST /api/productions/{prod}/exchange",
}
# MixerCommand.manual (the T-bar) is in mixer.proto before the mixer applies it (it answers
# INTERNAL): leave it out of the run until the switcher has it.
MIXER_HAS_T_BAR = hasattr(Switcher, "_manual")
EXAMPLES = {GenerationMode.NEGATIVE: 40, GenerationMode.POSITIVE: 30}


async def test_the_served_document_is_valid_openapi_3_1(
    control: ControlService, http: aiohttp.ClientSession
) -> None:
    async with http.get(base_url(control) + "/api/openapi.json") as response:
        assert response.status == 200  # no credentials needed
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        doc = await response.json()
    validate(doc)
    assert doc == openapi.document(VERSION)


def runner(
    strategy: Any,
    mode: GenerationMode,
    url: str,
    token: str,
    checks: list[Any],
    sent: dict[str, int],
    label: str,
) -> Any:
    """A Hypothesis test that sends each generated case and checks the answer."""

    @hypothesis.settings(
        max_examples=EXAMPLES[mode],
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        sent[label] += 1
        response = case.call(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        case.validate_response(response, checks=checks)

    return run


def fuzz(
    doc: dict[str, Any], url: str, token: str, prod: str, mode: GenerationMode
) -> tuple[dict[str, int], list[str]]:
    """Run every chosen operation; (examples sent per operation, failures)."""
    schema = schemathesis.openapi.from_dict(doc)
    # The test sends the director's bearer token itself; a generated (or negated) cookie next
    # to it would be ignored by the service (the bearer token counts), which makes no case.
    schema.config.generation.update(with_security_parameters=False)
    # A body over the size limit is refused with 413 before it is read, whatever else is wrong.
    rejection = schema.config.checks.negative_data_rejection
    rejection.expected_statuses = sorted({*rejection.expected_statuses, "413"})
    skip = NEVER | (NOT_RUNNING_HERE if mode == GenerationMode.POSITIVE else set())
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    if mode == GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    sent: dict[str, int] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        if label in skip:
            continue
        fixed = {"prod": prod} if "{prod}" in operation.path else None
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=fixed)
        t_bar = label == "POST /api/productions/{prod}/mixer" and mode == GenerationMode.POSITIVE
        if t_bar and not MIXER_HAS_T_BAR:
            strategy = strategy.filter(
                lambda case: not (isinstance(case.body, dict) and "manual" in case.body)
            )
        sent[label] = 0

        run = runner(strategy, mode, url, token, checks, sent, label)
        try:
            run()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing in it can be made invalid (only a fixed path parameter)
        except Exception as exc:
            failures.append(f"{mode.value} {label}: {exc}"[:2000])
    return sent, failures


async def test_a_property_based_run_finds_no_5xx_and_invalid_requests_change_nothing(
    bus: Bus, control: ControlService, show: Show, add_operator: AddOperator
) -> None:
    _, token = await add_operator("director", "张导")
    url = base_url(control)
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/api/openapi.json") as response:
            doc = await response.json()
        asrun_url = f"{url}/api/asrun/{show.id}?limit=1000"
        headers = {"Authorization": f"Bearer {token}"}

        async def as_run() -> list[Any]:
            async with http.get(asrun_url, headers=headers) as response:
                return list((await response.json())["entries"])

        switcher = (await command(bus, show.id, Cmd(get=Cmd.Get()))).switcher
        log = await as_run()
        sent, failures = await asyncio.to_thread(
            fuzz, doc, url, token, show.id, GenerationMode.NEGATIVE
        )
        assert failures == [], "\n\n".join(failures)
        assert sent["POST /api/productions/{prod}/mixer"] >= 30
        assert sent["POST /api/productions/{prod}/rundown"] >= 30
        assert (await command(bus, show.id, Cmd(get=Cmd.Get()))).switcher == switcher
        assert await as_run() == log

        sent, failures = await asyncio.to_thread(
            fuzz, doc, url, token, show.id, GenerationMode.POSITIVE
        )
        assert failures == [], "\n\n".join(failures)
        assert sent["POST /api/productions/{prod}/mixer"] >= 20
        assert sent["POST /api/productions/{prod}/rundown"] >= 20
