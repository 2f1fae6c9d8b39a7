"""Strategies: FIFO, LIFO, PRIORITY and WEIGHTED_RANDOM under a mixed-priority load.

What each claim strategy does to low priorities. One process keeps a backlog
of 1,000 tasks with priorities 1-10 (seeded; lower runs first) and then, for 500 rounds,
enqueues 10 new tasks with random priorities and claims 10 with the strategy under test,
so the backlog never shrinks and low priorities compete with a steady stream of higher
ones. Claimed tasks are left running (long lease): completing them costs the same for
every strategy and is measured elsewhere. Per strategy, median of 3 runs:

* claim cost: median time of one ``claim(limit=10)`` call (ms);
* starvation: the longest wait of a priority-10 task (the lowest), in rounds (claims of
  10 made while it waited: independent of the machine's speed), counting tasks still
  unclaimed at the end at their age then; PRIORITY starves them by design, for as long
  as higher priorities keep arriving (here the whole run, 500);
* fairness: Jain's index over the priority classes of (tasks claimed / tasks arrived);
  1.0 when every class is served in proportion to its arrivals.
"""

from __future__ import annotations

import random
import time

from . import _helpers as h

STRATEGIES = ["FIFO", "LIFO", "PRIORITY", "WEIGHTED_RANDOM"]
BACKLOG = h.size(1_000, 50)
ROUNDS = h.size(500, 10)
K = 10
LEVELS = list(range(1, 11))


async def _run(path: str, strategy: str, seed: int, rounds: int = ROUNDS) -> dict:
    pq = h.pq()
    strat = getattr(pq.Strategy, strategy, None)
    if strat is None:
        raise NotImplementedError(f"no Strategy.{strategy} on this commit")
    rng = random.Random(seed)
    h.remove_db(path)
    enq_at: dict[int, int] = {}
    prio: dict[int, int] = {}
    arrived = {p: 0 for p in LEVELS}
    served = {p: 0 for p in LEVELS}
    waits_low: list[int] = []
    rnd = 0
    claim_times: list[float] = []

    async def add(q, n):
        ps = [rng.choice(LEVELS) for _ in range(n)]
        items = [("s", {"i": i}, {"priority": p}) for i, p in enumerate(ps)]
        ids = await q.enqueue_many(items)
        for tid, p in zip(ids, ps):
            enq_at[tid], prio[tid] = rnd, p
            arrived[p] += 1

    async with pq.Queue(path, durability="normal") as q:
        await add(q, BACKLOG)
        await q.claim("warm", limit=1, strategy=strat, lease_seconds=3600)
        for p in LEVELS:
            arrived[p] = 0
        for rnd in range(1, rounds + 1):
            await add(q, K)
            t0 = time.perf_counter()
            tasks = await q.claim("w", limit=K, strategy=strat, lease_seconds=3600)
            claim_times.append(time.perf_counter() - t0)
            for t in tasks:
                p = prio[t.id]
                served[p] += 1
                if p == LEVELS[-1]:
                    waits_low.append(rnd - enq_at[t.id])
                del enq_at[t.id]
        waits_low += [rounds - at for tid, at in enq_at.items() if prio[tid] == LEVELS[-1]]
    h.remove_db(path)
    return {
        "claim_ms": h.median(claim_times) * 1000,
        "starvation": max(waits_low) if waits_low else 0.0,
        "fairness": h.jain([served[p] / arrived[p] for p in LEVELS if arrived[p]]),
    }


def measure(strategy: str) -> dict:
    tmp = h.TempDir()
    try:
        h.run(_run, tmp.file(), strategy, 0, max(2, ROUNDS // 10))  # warm-up
        runs = [h.run(_run, tmp.file(), strategy, seed) for seed in range(1, h.repeats() + 1)]
        return {k: h.median(r[k] for r in runs) for k in runs[0]}
    finally:
        tmp.cleanup()


class MixedPriorities:
    """Claim cost, starvation of the lowest priority, and fairness, per strategy."""

    params = [STRATEGIES]
    param_names = ["strategy"]
    timeout = 300
    version = 1

    def setup(self, strategy):
        pq = h.pq()
        if not hasattr(pq, "Strategy") or not hasattr(pq.Strategy, strategy):
            raise NotImplementedError(f"no Strategy.{strategy} on this commit")

    def _m(self, strategy):
        return h.shared(f"strategy-{strategy}", lambda: measure(strategy))

    def track_claim_ms(self, strategy):
        return self._m(strategy)["claim_ms"]

    track_claim_ms.unit = "ms"
    track_claim_ms.pretty_name = "Strategies: one claim(limit=10) under mixed priorities (ms)"

    def track_starvation_rounds(self, strategy):
        return self._m(strategy)["starvation"]

    track_starvation_rounds.unit = "rounds"
    track_starvation_rounds.pretty_name = "Strategies: longest wait of the lowest priority (claim rounds)"

    def track_fairness(self, strategy):
        return self._m(strategy)["fairness"]

    track_fairness.unit = "Jain index"
    track_fairness.pretty_name = "Strategies: fairness across priority classes (claimed/arrived)"
