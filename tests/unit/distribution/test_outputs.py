from __future__ import annotations

import random
import threading
import time
from fractions import Fraction
from typing import Any

import pytest

from services.common.gen.baycast.v1 import distribution_pb2 as dist
from services.distribution.outputs import Output, backoff_delay, masked_url
from services.distribution.packet_queue import EncodedPacket
from services.distribution.settings import DistributionSettings
from services.distribution.sinks import Sink, SinkError, SinkRejected

SETTINGS = DistributionSettings(
    http_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0", retry_max_s=0.05, fail_after_s=0
)


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 30, rng) for n in range(1, 8)]
    for delay, base in zip(delays, [1, 2, 4, 8, 16, 30, 30], strict=True):
        assert base * 0.8 <= delay <= base * 1.2
    jittered = {round(backoff_delay(3, 30, rng), 6) for _ in range(20)}
    assert len(jittered) > 10  # outputs that fail together do not retry together


@pytest.mark.parametrize(
    ("url", "key", "shown"),
    [
        ("rtmp://push.example.com/live", "abc123", "rtmp://push.example.com/live/***"),
        ("rtmps://u:pw@example.com:443/app/", "k", "rtmps://***@example.com:443/app/***"),
        (
            "srt://10.0.0.1:9000?streamid=x&passphrase=p",
            "",
            "srt://10.0.0.1:9000?streamid=x&passphrase=***",
        ),
        ("", "", ""),
    ],
)
def test_masked_url(url: str, key: str, shown: str) -> None:
    assert masked_url(dist.OutputSpec(url=url, stream_key=key)) == shown


class ScriptedSink(Sink):
    """Fails or works as the test says, one script entry per connection attempt."""

    def __init__(self, script: list[str], written: list[EncodedPacket]) -> None:
        self.script = script
        self.written = written
        self.mode = ""

    def open(self, templates: Any) -> None:
        self.mode = self.script.pop(0) if self.script else "ok"
        if self.mode == "reject":
            raise SinkRejected("Server error: no such application")
        if self.mode == "refuse":
            raise SinkError("Connection refused")

    def write(self, packet: EncodedPacket) -> int:
        if self.mode == "break":
            raise SinkError("Broken pipe")
        self.written.append(packet)
        return len(packet.data)

    def close(self) -> None:
        pass


def run_output(
    script: list[str], spec: dist.OutputSpec, settings: DistributionSettings = SETTINGS
) -> tuple[Output, list[int]]:
    seen: list[int] = []
    written: list[EncodedPacket] = []
    changed = threading.Event()

    def on_change(output: Output) -> None:
        seen.append(output.status)
        changed.set()

    output = Output(
        spec,
        settings,
        lambda: object(),
        on_change,  # type: ignore[arg-type,return-value]
        lambda _spec, _settings: ScriptedSink(script, written),
    )
    output.start()
    return output, seen


def feed(output: Output, count: int) -> None:
    for n in range(count):
        output.queue.put(EncodedPacket(True, b"x" * 10, n, n, n % 5 == 0, Fraction(1, 25)))
        time.sleep(0.005)


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


SPEC = dist.OutputSpec(
    id="o1", production="p1", kind=dist.OUTPUT_KIND_RTMP, url="rtmp://h/app", stream_key="sekrit"
)


def test_a_rejected_output_fails_after_one_attempt() -> None:
    output, seen = run_output(["reject"], SPEC)
    wait_for(lambda: not output.running)
    assert seen == [dist.OUTPUT_STATUS_CONNECTING, dist.OUTPUT_STATUS_FAILED]
    assert output.attempts == 1 and "no such application" in output.reason


def test_a_refused_output_retries_then_goes_live() -> None:
    output, seen = run_output(["refuse", "refuse", "ok"], SPEC)
    wait_for(lambda: output.status == dist.OUTPUT_STATUS_LIVE)
    assert seen == [
        dist.OUTPUT_STATUS_CONNECTING,
        dist.OUTPUT_STATUS_RETRYING,
        dist.OUTPUT_STATUS_CONNECTING,
        dist.OUTPUT_STATUS_RETRYING,
        dist.OUTPUT_STATUS_CONNECTING,
        dist.OUTPUT_STATUS_LIVE,
    ]
    assert output.attempts == 3 and output.reconnects == 0
    output.request_stop()
    output.join(5)
    assert seen[-1] == dist.OUTPUT_STATUS_IDLE


def test_a_broken_live_connection_counts_a_reconnect() -> None:
    output, seen = run_output(["break", "ok"], SPEC)
    wait_for(lambda: output.status == dist.OUTPUT_STATUS_LIVE)
    feed(output, 6)
    wait_for(lambda: output.reconnects == 1 and output.status == dist.OUTPUT_STATUS_LIVE)
    feed(output, 6)
    wait_for(lambda: output.bytes_sent > 0)
    output.request_stop()
    output.join(5)
    assert seen == [
        dist.OUTPUT_STATUS_CONNECTING,
        dist.OUTPUT_STATUS_LIVE,
        dist.OUTPUT_STATUS_RETRYING,
        dist.OUTPUT_STATUS_CONNECTING,
        dist.OUTPUT_STATUS_LIVE,
        dist.OUTPUT_STATUS_IDLE,
    ]


def test_retrying_too_long_fails_with_the_last_reason() -> None:
    settings = DistributionSettings(
        http_addr="127.0.0.1:0", grpc_addr="127.0.0.1:0", retry_max_s=0.05, fail_after_s=0.2
    )
    output, _ = run_output(["refuse"] * 100, SPEC, settings)
    wait_for(lambda: not output.running)
    assert output.status == dist.OUTPUT_STATUS_FAILED
    assert "gave up" in output.reason and "Connection refused" in output.reason
    assert output.attempts >= 2


def test_secrets_are_masked_in_reasons() -> None:
    spec = dist.OutputSpec()
    spec.CopyFrom(SPEC)
    output = Output(spec, SETTINGS, lambda: None, lambda _o: None)
    assert output.redact("failed: rtmp://h/app/sekrit") == "failed: rtmp://h/app/***"
    assert "sekrit" not in str(output.state())
