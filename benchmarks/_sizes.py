"""Pinned workload sizes: every commit does the same work.

``PRISMQ_BENCH_SMOKE=1`` shrinks every size (the test suite runs each benchmark once
that way); results taken with it are not meant to be compared with anything.
"""

from __future__ import annotations

import os

SMOKE = os.environ.get("PRISMQ_BENCH_SMOKE", "") not in ("", "0")


def size(full: int, smoke: int) -> int:
    """A pinned workload size; the small one under PRISMQ_BENCH_SMOKE."""
    return smoke if SMOKE else full
