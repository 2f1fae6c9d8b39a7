"""RetryPolicy: how many attempts a task gets and how long it waits between them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .errors import InvalidArgument


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: delay = min(cap, base * factor**(attempt-1)) +/- jitter."""

    max_attempts: int = 5
    base_delay: float = 1.0
    factor: float = 2.0
    max_delay: float = 300.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise InvalidArgument(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("base_delay", "factor", "max_delay", "jitter"):
            value = getattr(self, name)
            # NaN passes every comparison below as False, and a NaN delay would
            # store a run_at that is never due: only finite numbers are accepted.
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidArgument(f"{name} must be a finite number, got {value!r}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise InvalidArgument("base_delay and max_delay must be >= 0")
        if self.factor < 1:
            raise InvalidArgument("factor must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise InvalidArgument("jitter must be between 0 and 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        exponent = max(attempt - 1, 0)
        # Past about a thousand doublings the power overflows a float; the cap applies long before.
        raw = self.max_delay if exponent > 1000 else min(self.max_delay, self.base_delay * self.factor**exponent)
        if self.jitter:
            spread = raw * self.jitter
            raw += (rng or random).uniform(-spread, spread)
        return max(0.0, raw)

    def should_retry(self, attempts: int, max_attempts: int | None = None) -> bool:
        """True while a task that has made `attempts` attempts may run again."""
        limit = self.max_attempts if max_attempts is None else max_attempts
        return attempts < limit
