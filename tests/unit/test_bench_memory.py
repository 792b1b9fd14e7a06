"""The soak's memory reading tells a process's media rings from the rest of its memory."""

from __future__ import annotations

import gc
import os

import numpy as np

from bench.platform import rss_mib
from services.common.media import i420_shared_message
from services.common.shared_memory import RingHolder


def test_the_rings_a_process_writes_count_in_its_shared_memory() -> None:
    pid = os.getpid()
    before = rss_mib(pid, "RssShmem")
    holder = RingHolder(slots=2)
    picture = np.full((1080 * 3 // 2, 1920), 128, dtype=np.uint8)  # 3.0 MiB of I420
    try:
        for sequence in (1, 2):
            i420_shared_message(holder, picture, pts_us=sequence * 40_000, sequence=sequence)
        grown = rss_mib(pid, "RssShmem") - before
        assert 5.9 <= grown <= 6.5, grown  # two slots written, each a picture and its header
    finally:
        holder.close()
    gc.collect()
    assert rss_mib(pid, "RssShmem") - before < 0.5  # the ring's memory went with it
