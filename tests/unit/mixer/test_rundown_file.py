from __future__ import annotations

from pathlib import Path

import pytest

from services.common import errors
from services.mixer.rundown import load_rundown_file, parse_rundown


def test_yaml_conveniences_become_the_proto(tmp_path: Path) -> None:
    path = tmp_path / "show.yaml"
    path.write_text(
        """
name: 启航·大湾区
loop: true
segments:
  - title: 城市联播
    duration: 8
    layout: city_wall
  - title: 广州
    duration: 2.5
    program: gz
    transition: mix
    graphics:
      - show: {template: lower_third, instance: lt, fields: {name: 张晓琳}}
  - title: 北京连线
    duration: manual
    audio:
      - {source: bj, gain_db: -3}
""",
        encoding="utf-8",
    )
    rundown = load_rundown_file(path)
    assert rundown.loop and rundown.name == "启航·大湾区"
    assert [s.duration_ms for s in rundown.segments] == [8000, 2500, 0]
    assert rundown.segments[0].layout.name == "city_wall"
    assert rundown.segments[1].transition.type == "mix"
    assert rundown.segments[1].graphics[0].show.fields["name"] == "张晓琳"
    assert rundown.segments[2].audio[0].gain_db == -3


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"segments": [{"duration": "soon"}]}, "segments[0].duration"),
        ({"segments": [{"duration": -1}]}, "segments[0].duration"),
        ({"segments": [{"colour": "red"}]}, "segments"),
        ({"title": "no segments"}, "segments"),
    ],
)
def test_bad_rundowns_name_the_field(document: dict[str, object], field: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        parse_rundown(document)
    assert info.value.field == field


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("segments: [unclosed", encoding="utf-8")
    with pytest.raises(errors.InvalidArgument, match=r"broken\.yaml"):
        load_rundown_file(path)
