"""Validation of a source's processing settings and of the production's loudness settings
(proto: HighPass, Gate, Compressor, Equalizer, Loudness): each value in its range, or an
InvalidArgument naming the field. Unset fields are fine: they take their defaults."""

from __future__ import annotations

from google.protobuf.message import Message

from services.common import errors
from services.common.gen.baycast.v1 import mixer_pb2

MAX_TRIM_DB = 24.0
MAX_EQ_GAIN_DB = 18.0
# (message field, lowest, highest) per processing block.
RANGES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "HighPass": (("frequency_hz", 20.0, 1000.0),),
    "Gate": (
        ("threshold_db", -90.0, 0.0),
        ("range_db", 0.0, 90.0),
        ("attack_ms", 0.05, 100.0),
        ("release_ms", 5.0, 5000.0),
    ),
    "Compressor": (
        ("threshold_db", -60.0, 0.0),
        ("ratio", 1.0, 20.0),
        ("attack_ms", 0.05, 500.0),
        ("release_ms", 5.0, 5000.0),
        ("makeup_db", 0.0, 24.0),
    ),
    "EqBand": (
        ("gain_db", -MAX_EQ_GAIN_DB, MAX_EQ_GAIN_DB),
        ("frequency_hz", 20.0, 20000.0),
        ("q", 0.1, 10.0),
    ),
    "Loudness": (("target_lufs", -36.0, -10.0), ("true_peak_dbtp", -10.0, 0.0)),
}


def _check_ranges(message: Message, field: str) -> None:
    for name, low, high in RANGES[message.DESCRIPTOR.name]:
        if message.HasField(name):
            value = getattr(message, name)
            if not low <= value <= high:
                raise errors.InvalidArgument(
                    f"{field}.{name} must be between {low:g} and {high:g}, got {value:g}",
                    field=f"{field}.{name}",
                )


def check_trim(value: float, field: str) -> None:
    if not -MAX_TRIM_DB <= value <= MAX_TRIM_DB:
        raise errors.InvalidArgument(
            f"{field} must be between {-MAX_TRIM_DB:g} and {MAX_TRIM_DB:g} dB", field=field
        )


def check_processing(
    audio: mixer_pb2.SourceAudio | mixer_pb2.MixerCommand.Audio, field: str
) -> None:
    """The processing blocks `audio` carries (a production's SourceAudio or a command)."""
    _check_ranges(audio.high_pass, f"{field}.high_pass")
    _check_ranges(audio.gate, f"{field}.gate")
    _check_ranges(audio.compressor, f"{field}.compressor")
    for band in ("low", "mid", "high"):
        _check_ranges(getattr(audio.eq, band), f"{field}.eq.{band}")


def check_loudness(loudness: mixer_pb2.Loudness, field: str) -> None:
    _check_ranges(loudness, field)


def merge(stored: mixer_pb2.SourceAudio, command: mixer_pb2.MixerCommand.Audio) -> None:
    """The processing fields `command` sets, written over `stored`; the others kept."""
    if command.HasField("trim_db"):
        stored.trim_db = command.trim_db
    for block in ("high_pass", "gate", "compressor", "eq"):
        if command.HasField(block):
            getattr(stored, block).MergeFrom(getattr(command, block))


def sets_processing(command: mixer_pb2.MixerCommand.Audio) -> bool:
    return any(
        command.HasField(name) for name in ("trim_db", "high_pass", "gate", "compressor", "eq")
    )
