"""Seeded workloads (the same payloads for a given seed on every commit) and a paced producer.

No relative imports: benchmarks/_child.py, run as a script, imports this module too.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any, Iterable, Sequence


def payloads(n: int, seed: int = 1, start: int = 0) -> list[dict]:
    """n distinct small JSON payloads, the same for a given seed on every commit."""
    rng = random.Random(seed)
    return [{"n": start + i, "k": rng.randrange(1 << 30)} for i in range(n)]


def noop_items(n: int, seed: int = 1, type_: str = "noop", start: int = 0) -> list[tuple]:
    return [(type_, p) for p in payloads(n, seed, start)]


def chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


async def fill(q, n: int, type_: str = "noop", seed: int = 1, batch: int = 5000, start: int = 0,
               **options: Any) -> list[int]:
    """Enqueue n distinct tasks through enqueue_many in batches (fast prefill)."""
    ids: list[int] = []
    items = noop_items(n, seed, type_, start)
    for part in chunks(items, batch):
        ids.extend(await q.enqueue_many(list(part), **options))
    return ids


async def produce(q, n: int, interval: float, batch: int, type_: str = "lat") -> None:
    """Enqueue n tasks, `batch` every `interval` seconds, each stamped with its enqueue time."""
    nxt = time.monotonic()
    sent = 0
    while sent < n:
        delay = nxt - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        k = min(batch, n - sent)
        if k == 1:
            await q.enqueue(type_, {"t0": time.monotonic(), "i": sent})
        else:
            t0 = time.monotonic()
            await q.enqueue_many([(type_, {"t0": t0, "i": sent + j}) for j in range(k)])
        sent += k
        nxt += interval
