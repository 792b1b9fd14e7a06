from __future__ import annotations

import itertools
import os

import pytest

_ids = itertools.count()


@pytest.fixture
def production() -> str:
    """A production id of this test's own (the NATS server and its buckets are shared)."""
    return f"gfxtest{os.getpid()}n{next(_ids)}"
