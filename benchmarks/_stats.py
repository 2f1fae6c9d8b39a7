"""Medians, nearest-rank percentiles and Jain's fairness index."""

from __future__ import annotations

import math
import statistics
from typing import Callable, Iterable, Sequence

from ._sizes import SMOKE

REPEATS = 1 if SMOKE else 3  # medians are taken over this many measured repeats


def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else math.nan


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when all shares are equal, 1/n when one takes all."""
    xs = list(xs)
    if not xs:
        return math.nan
    sq = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * sq) if sq else 1.0


def repeat_median(fn: Callable[[], float], repeats: int | None = None, warmup: bool = True) -> float:
    """Median of `repeats` calls of fn() (after one unmeasured warm-up call when asked)."""
    if warmup:
        fn()
    return median(fn() for _ in range(repeats or REPEATS))
