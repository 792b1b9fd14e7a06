"""Data binding: paths into JSON, value text, validation, and a watched file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest

from services.common import errors
from services.common.gen.baycast.v1 import graphics_pb2
from services.graphics.binding import DataBinding, as_field_text, check_binding, extract


def test_extract_and_text() -> None:
    doc = {"match": {"score": [3, 1], "teams": ["广州", "深圳"]}, "ok": True}
    assert extract(doc, "match.score.0") == 3
    assert extract(doc, "") is doc
    with pytest.raises(KeyError):
        extract(doc, "match.minute")
    assert as_field_text(3) == "3" and as_field_text(2.5) == "2.5" and as_field_text(True) == "true"
    assert as_field_text(doc["match"]["teams"]) == '["广州", "深圳"]'


def test_a_binding_has_one_source() -> None:
    for spec, field in [
        (graphics_pb2.GfxBinding(field="a"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", file="x", url="http://h"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", url="ftp://h/x"), "b.url"),
        (graphics_pb2.GfxBinding(field="a", file="x", interval_ms=5), "b.interval_ms"),
    ]:
        with pytest.raises(errors.InvalidArgument) as caught:
            check_binding(spec, "b")
        assert caught.value.field == field


async def test_a_watched_file_feeds_each_change_once(tmp_path: Path) -> None:
    path = tmp_path / "score.json"
    path.write_text(json.dumps({"score": "1:0"}))
    seen: list[str] = []
    changed = asyncio.Event()

    async def on_value(text: str) -> None:
        seen.append(text)
        changed.set()

    spec = graphics_pb2.GfxBinding(field="s", file=str(path), path="score", interval_ms=100)
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(DataBinding(spec, session, on_value).run())
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
    assert seen == ["1:0", "2:0"]
