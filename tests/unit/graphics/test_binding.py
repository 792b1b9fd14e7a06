"""Data binding: paths into JSON, value text, validation, and a watched file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from services.common import errors
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics.binding import DataBinding, as_field_text, check_binding, extract
from services.graphics.data_policy import BindingRefused, DataPolicy, parse_hosts
from services.graphics.data_reader import DataReader


def policy(data_dir: Path, *hosts: str) -> DataPolicy:
    return DataPolicy(parse_hosts(hosts), (), str(data_dir), 1024, 5.0)


async def never_refused(exc: BindingRefused) -> None:
    raise AssertionError(exc.message)


def test_extract_and_text() -> None:
    doc = {"match": {"score": [3, 1], "teams": ["广州", "深圳"]}, "ok": True}
    assert extract(doc, "match.score.0") == 3
    assert extract(doc, "") is doc
    with pytest.raises(KeyError):
        extract(doc, "match.minute")
    assert as_field_text(3) == "3" and as_field_text(2.5) == "2.5" and as_field_text(True) == "true"
    assert as_field_text(doc["match"]["teams"]) == '["广州", "深圳"]'


def test_a_binding_has_one_source(tmp_path: Path) -> None:
    for spec, field in [
        (graphics_pb2.GfxBinding(field="a"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", file="x", url="http://h"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", url="ftp://h/x"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", file="x", interval_ms=5), "b.interval_ms"),
    ]:
        with pytest.raises(errors.InvalidArgument) as caught:
            check_binding(spec, "b", policy(tmp_path))
        assert caught.value.field == field


def test_a_binding_the_policy_refuses_names_its_field_and_rule(tmp_path: Path) -> None:
    allowed = policy(tmp_path / "data", "scores.example.com")
    check_binding(graphics_pb2.GfxBinding(field="a", file="x.json"), "b", allowed)
    check_binding(
        graphics_pb2.GfxBinding(field="a", url="https://scores.example.com/"), "b", allowed
    )
    for spec, field, rule in [
        (graphics_pb2.GfxBinding(field="a", file="../x.json"), "b.file", "outside_data_dir"),
        (
            graphics_pb2.GfxBinding(field="a", url="http://other.example/"),
            "b.url",
            "host_not_allowed",
        ),
    ]:
        with pytest.raises(BindingRefused) as caught:
            check_binding(spec, "b", allowed)
        assert (caught.value.field, caught.value.rule, caught.value.code) == (
            field,
            rule,
            "PERMISSION_DENIED",
        )


async def test_a_watched_file_feeds_each_change_once(tmp_path: Path) -> None:
    path = tmp_path / "score.json"
    path.write_text(json.dumps({"score": "1:0"}))
    seen: list[str] = []
    changed = asyncio.Event()

    async def on_value(text: str) -> None:
        seen.append(text)
        changed.set()

    spec = graphics_pb2.GfxBinding(field="s", file="score.json", path="score", interval_ms=100)
    reader = DataReader(policy(tmp_path))
    task = asyncio.create_task(DataBinding(spec, reader, on_value, never_refused).run())
    try:
        async with asyncio.timeout(5):
            await changed.wait()
            changed.clear()
            path.write_text(json.dumps({"score": "1:0", "minute": 3}))  # same score
            await asyncio.sleep(0.35)
            path.write_text("{half written")  # read again later, never fed
            await asyncio.sleep(0.25)
            path.write_text(json.dumps({"score": "2:0"}))
            await changed.wait()
    finally:
        task.cancel()
        await reader.close()
    assert seen == ["1:0", "2:0"]
