"""RTMP fuzzing, bounded: the corpus replayed, then atheris on the chunk parser and the AMF0
decoder for a fixed number of inputs from a fixed seed (tests/fuzz/run.py says how to run long).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest import rtmp_amf
from services.ingest.rtmp_chunks import COMMAND_AMF0, HANDSHAKE_SIZE, RTMP_VERSION, ChunkParser
from tests.fuzz import rtmp
from tests.fuzz.run import REPO, TARGETS, atheris_command, corpus, long_seconds

PUBLISH_COMMANDS = ["connect", "releaseStream", "FCPublish", "createStream", "publish"]


@pytest.mark.parametrize("path", corpus("rtmp_chunks"), ids=lambda p: p.name)
def test_real_publishes_replay(path: Path) -> None:
    data = path.read_bytes()
    rtmp.chunk_stream(data)
    commands = [
        rtmp_amf.decode(m.payload)[0] for m in ChunkParser().feed(data) if m.type_id == COMMAND_AMF0
    ]
    # librtmp (OBS, GStreamer's rtmpsink) and ffmpeg send the same commands up to `publish`.
    assert commands == PUBLISH_COMMANDS


@pytest.mark.parametrize(
    "path",
    [p for p in corpus("rtmp_amf") if not p.name.startswith("regression-")],
    ids=lambda p: p.name,
)
def test_real_command_bodies_replay(path: Path) -> None:
    data = path.read_bytes()
    rtmp.amf0(data)
    first = rtmp_amf.decode(data)[0]
    assert first in [*PUBLISH_COMMANDS, "@setDataFrame"]


@settings(max_examples=50, derandomize=True, database=None)
@given(st.binary(min_size=1 + HANDSHAKE_SIZE, max_size=1 + HANDSHAKE_SIZE), st.booleans())
def test_handshake_answers_c1_or_refuses(c0c1: bytes, version_3: bool) -> None:
    if version_3:
        c0c1 = bytes([RTMP_VERSION]) + c0c1[1:]
    rtmp.handshake(c0c1)


@settings(max_examples=50, derandomize=True, database=None)
@given(st.binary(max_size=2 * HANDSHAKE_SIZE))
def test_handshake_of_any_length(data: bytes) -> None:
    rtmp.handshake(data)


@pytest.mark.parametrize("target", ["rtmp_chunks", "rtmp_amf"])
def test_atheris_finds_nothing(target: str, tmp_path: Path) -> None:
    seconds = long_seconds()
    command = atheris_command(
        target,
        runs=0 if seconds else TARGETS[target].bounded,
        seconds=seconds,
        artifacts=tmp_path / "artifacts",
        grow=tmp_path / "grown",
    )
    done = subprocess.run(
        command, cwd=REPO, capture_output=True, text=True, timeout=max(120, 2 * seconds)
    )
    crashes = sorted((tmp_path / "artifacts").glob("*")) if done.returncode else []
    assert done.returncode == 0, (
        f"atheris found {[c.name for c in crashes]} (replay: python -m tests.fuzz.run {target} "
        f"--replay FILE)\n{done.stderr[-6000:]}"
    )
    executed = re.search(r"stat::number_of_executed_units: (\d+)", done.stderr)
    assert executed is not None and int(executed.group(1)) >= (
        1 if seconds else TARGETS[target].bounded
    )
