"""`baycast station` takes its token from a file or the environment (`--token` shows in `ps`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from services.station.cli import register, station_token


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["station", "--whip", "http://127.0.0.1:8101/whip/gz", *argv])


def test_the_token_comes_from_a_file_first_then_the_flag_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "token"
    path.write_text("from-the-file\n")
    monkeypatch.setenv("BAYCAST_STATION_TOKEN", "from-the-environment")
    assert station_token(parse("--token-file", str(path), "--token", "flag")) == "from-the-file"
    assert station_token(parse("--token", "flag")) == "flag"
    assert station_token(parse()) == "from-the-environment"
    monkeypatch.delenv("BAYCAST_STATION_TOKEN")
    assert station_token(parse()) == ""
    with pytest.raises(FileNotFoundError):
        station_token(parse("--token-file", str(tmp_path / "missing")))
