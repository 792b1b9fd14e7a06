"""The loudness target each production's program is judged against (docs/adr/0021).

The mixer levels a production's program to `Production.loudness.target_lufs` (−23 LUFS, EBU R128,
when the production sets none), so monitoring judges the program against that same figure, read
from the productions bucket: a show delivered at −16 or −24 LUFS is on target, not an alarm. A
production whose loudness control is off (`enabled: false`) is not levelled: its program, like a
program whose production monitoring has not read, is judged against the platform's target
(`BAYCAST_MONITORING_LOUDNESS_TARGET_LUFS`).
"""

from __future__ import annotations

from collections.abc import Callable

from services.common.gen.baycast.v1 import mixer_pb2
from services.common.kv_mirror import KvMirror

# The mixer's target for a production that sets none (mixer.proto, `Loudness.target_lufs`).
LEVELLED_DEFAULT_LUFS = -23.0

TargetOf = Callable[[str], float]


def target_lufs(production: mixer_pb2.Production | None, platform_lufs: float) -> float:
    """The target `production`'s program is judged against."""
    if production is None:
        return platform_lufs
    loudness = production.loudness
    if loudness.HasField("enabled") and not loudness.enabled:
        return platform_lufs
    return loudness.target_lufs if loudness.HasField("target_lufs") else LEVELLED_DEFAULT_LUFS


def targets_from(productions: KvMirror[mixer_pb2.Production], platform_lufs: float) -> TargetOf:
    """Production id -> its target, from the mirror of the productions bucket (a dict lookup)."""
    return lambda production: target_lufs(productions.get(production), platform_lufs)
