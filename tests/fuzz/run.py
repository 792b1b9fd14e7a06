"""Fuzzing what peers and clients send before anything trusts it.

Five targets, each a property over one parser's public entry point and a seed corpus of real
inputs in `tests/fuzz/corpus/<target>/` (`tests/fuzz/capture.py` records them again):

    target        engine      entry point (the property: module)         seeds
    rtmp_chunks   atheris     ingest ChunkParser.feed (rtmp.py)          ffmpeg, librtmp (as in
                                                                         OBS), GStreamer publishing
    rtmp_amf      atheris     ingest rtmp_amf.decode (rtmp.py)           their commands' bodies
    whip_offer    hypothesis  ingest webrtc_source.check_offer, then     offers of Chromium,
                              WhipSource.answer (sdp.py)                 FFmpeg, GStreamer, OBS
                                                                         (libdatachannel), aiortc
    whep_offer    hypothesis  distribution whep_offer.check_offer, then  Chromium, aiortc
                              Viewer.answer (sdp.py)
    command_json  hypothesis  control canonical_json.parse and .load     the control room's
                              (command_json.py)                          command bodies

(RTMP's `handshake_reply` takes fixed-size input: a plain Hypothesis test in test_rtmp.py.)

atheris (libFuzzer, coverage-guided) takes the binary RTMP wire: mutating real captures byte by
byte is what finds the header and length corner cases. Hypothesis takes the structured text:
SDP offers mutated line by line and token by token (a byte flip mostly breaks `v=0` or the
parse, never reaching the checks between sections), and command JSON drawn from each command's
protobuf descriptor, right and wrong, which byte mutation would almost never make valid enough
to reach the round trip. Both are seeded, so a bounded run replays exactly.

Bounded, inside `make test` (`tests/fuzz/test_*.py`): each target replays its corpus, then
fuzzes a fixed number of inputs from a fixed seed (`Target.bounded` below): about 25 s of one
core for all five.

Long runs, by hand or on a spare machine:

    .venv/bin/python -m tests.fuzz.run rtmp_chunks --seconds 600
    .venv/bin/python -m tests.fuzz.run all --seconds 600          # one target after another
    BAYCAST_FUZZ_SECONDS=600 .venv/bin/pytest -q -p no:cacheprovider tests/fuzz/test_rtmp.py

`--grow DIR` keeps the inputs atheris found interesting (copy the useful ones into the corpus);
`--seed N` changes the seed. A failure: atheris writes `crash-<sha1>` into `--artifacts`
(default `build/fuzz/`) and prints the traceback; re-run that one input with
`run.py TARGET --replay FILE`, shrink it with `run.py TARGET --runs 10000 -- -minimize_crash=1
FILE` (libFuzzer flags go after `--`); Hypothesis shrinks and prints the failing input itself.
Fix the parser, then add the minimized input to `corpus/<target>/` as a regression seed named
after what it broke (`regression-...`: test_sdp.py and test_command_json.py check its refusal).
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.strategies import SearchStrategy

HERE = Path(__file__).parent
CORPUS = HERE / "corpus"
REPO = HERE.parents[1]
DEFAULT_SEED = 20260305  # the show's date: any fixed number makes a bounded run replay exactly
SECONDS_ENV = "BAYCAST_FUZZ_SECONDS"


@dataclass(frozen=True)
class Target:
    engine: str  # "atheris" or "hypothesis"
    check: str  # "module:function": the property, over bytes (atheris) or a drawn value
    bounded: int  # inputs in a bounded run (atheris: executions, corpus included)
    instrument: tuple[str, ...] = ()  # atheris: the modules whose coverage guides it
    strategy: str = ""  # hypothesis: "module:function" returning the strategy
    seed_value: str = ""  # hypothesis: "module:function", a corpus file -> a value to check


TARGETS = {
    "rtmp_chunks": Target(
        "atheris", "tests.fuzz.rtmp:chunk_stream", 8_000, ("services.ingest.rtmp_chunks",)
    ),
    "rtmp_amf": Target("atheris", "tests.fuzz.rtmp:amf0", 25_000, ("services.ingest.rtmp_amf",)),
    "whip_offer": Target(
        "hypothesis",
        "tests.fuzz.sdp:whip_offer",
        300,
        strategy="tests.fuzz.sdp:whip_offers",
        seed_value="tests.fuzz.sdp:offer_text",
    ),
    "whep_offer": Target(
        "hypothesis",
        "tests.fuzz.sdp:whep_offer",
        300,
        strategy="tests.fuzz.sdp:whep_offers",
        seed_value="tests.fuzz.sdp:offer_text",
    ),
    "command_json": Target(
        "hypothesis",
        "tests.fuzz.command_json:command_body",
        800,
        strategy="tests.fuzz.command_json:command_bodies",
        seed_value="tests.fuzz.command_json:seed_body",
    ),
}


def _load(dotted: str) -> Any:
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def corpus(target: str) -> list[Path]:
    """The seeds of `target`, in a stable order."""
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


def long_seconds() -> float:
    """BAYCAST_FUZZ_SECONDS, or 0 for the bounded run."""
    return float(os.environ.get(SECONDS_ENV) or 0)


# -- atheris ------------------------------------------------------------------------------------


def atheris_command(
    target: str,
    *,
    runs: int = 0,
    seconds: float = 0,
    seed: int = DEFAULT_SEED,
    artifacts: Path,
    grow: Path,
    extra: tuple[str, ...] = (),
) -> list[str]:
    """The command that fuzzes `target` with atheris in a process of its own (libFuzzer ends
    the process it runs in)."""
    command = [sys.executable, "-m", "tests.fuzz.run", target, "--seed", str(seed)]
    command += ["--artifacts", str(artifacts), "--grow", str(grow)]
    command += ["--runs", str(runs)] if runs else ["--seconds", str(seconds)]
    return [*command, "--", *extra] if extra else command


def _fuzz_atheris(target: str, args: argparse.Namespace) -> None:
    import atheris

    spec = TARGETS[target]
    with atheris.instrument_imports(include=list(spec.instrument)):
        check = _load(spec.check)
    args.artifacts.mkdir(parents=True, exist_ok=True)
    args.grow.mkdir(parents=True, exist_ok=True)
    libfuzzer = [
        sys.argv[0],
        f"-seed={args.seed}",
        f"-artifact_prefix={args.artifacts}/",
        "-max_len=65536",  # what one command may be; media chunks are cut far smaller
        "-timeout=10",  # one input working this long is a hang: a finding too
        "-rss_limit_mb=2048",
        "-print_final_stats=1",
    ]
    if args.runs:
        libfuzzer.append(f"-runs={args.runs}")
    else:
        libfuzzer.append(f"-max_total_time={max(1, int(args.seconds))}")
    # New inputs go to the first folder, so the checked-in corpus is read, never written.
    libfuzzer += [*args.libfuzzer, str(args.grow), str(CORPUS / target)]
    atheris.Setup(libfuzzer, check)
    atheris.Fuzz()


# -- hypothesis ---------------------------------------------------------------------------------


def fuzz_hypothesis(
    target: str, *, examples: int | None = None, seconds: float = 0, seed: int = DEFAULT_SEED
) -> int:
    """Draw inputs for `target` and check each: `examples` of them from `seed`, or rounds of
    them from successive seeds until `seconds` pass. Returns how many were drawn."""
    spec = TARGETS[target]
    check: Callable[[Any], None] = _load(spec.check)
    strategy: SearchStrategy[Any] = _load(spec.strategy)()
    examples = examples or spec.bounded
    deadline = time.monotonic() + seconds
    drawn = 0
    for round_ in range(sys.maxsize):

        @settings(
            max_examples=examples,
            database=None,
            deadline=None,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=list(HealthCheck),
            print_blob=True,
        )
        @hypothesis_seed(seed + round_)
        @given(strategy)
        def case(value: Any) -> None:
            nonlocal drawn
            drawn += 1
            check(value)

        case()
        if time.monotonic() >= deadline:
            break
    return drawn


# -- the command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Fuzz one target (or all) for a while; see the module docstring."
    )
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long (per target)")
    parser.add_argument("--runs", type=int, default=0, help="atheris: this many inputs instead")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--artifacts", type=Path, default=REPO / "build/fuzz")
    parser.add_argument("--grow", type=Path, help="atheris: keep new inputs here")
    parser.add_argument("--replay", type=Path, help="check this one input and stop")
    parser.add_argument("libfuzzer", nargs="*", help="after --: libFuzzer flags (atheris)")
    args = parser.parse_args(argv)
    targets = list(TARGETS) if args.target == "all" else [args.target]
    if args.replay is not None:
        if args.target == "all":
            parser.error("--replay needs the target the input is for")
        replay(args.target, args.replay)
        print(f"{args.target}: {args.replay} passes")
        return
    for target in targets:
        spec = TARGETS[target]
        if spec.engine == "hypothesis":
            drawn = fuzz_hypothesis(target, seconds=args.seconds, seed=args.seed)
            print(f"{target}: {drawn} inputs, no failure")
        elif len(targets) == 1:
            args.grow = args.grow or args.artifacts / f"{target}-grown"
            _fuzz_atheris(target, args)  # does not return
        else:
            grow = args.grow or args.artifacts / f"{target}-grown"
            command = atheris_command(
                target,
                runs=args.runs,
                seconds=args.seconds,
                seed=args.seed,
                artifacts=args.artifacts,
                grow=grow,
                extra=tuple(args.libfuzzer),
            )
            subprocess.run(command, cwd=REPO, check=True)


def replay(target: str, path: Path) -> None:
    """Check one input of `target` (a corpus file, or a crash file atheris wrote)."""
    spec = TARGETS[target]
    check = _load(spec.check)
    check(_load(spec.seed_value)(path) if spec.seed_value else path.read_bytes())


if __name__ == "__main__":
    main()
