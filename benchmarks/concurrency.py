"""Concurrency: 1, 2, 4, 8, 16 and 20 worker *processes* on one SQLite file.

(With ``PRISMQ_BENCH_PG`` set, the same on PostgreSQL: param ``backend``.)
Each worker process opens its own Queue (its own connection) and loops
``claim(limit=10)`` / ``complete`` until the queue is empty, so SQLite's single-writer
lock is really contended (the original suite shared one connection behind a lock and
never saw contention). The parent fills the file with a pinned number of no-op tasks,
starts all workers at once and gathers what each saw. Measured per process count:

* tasks/s from the first claim to the last completion of a round of 2,000 tasks (median
  of 3 rounds after a warm-up round); one pool of 20 processes is started once and the
  first N of them take part in each measurement;
* speedup over 1 process and scaling efficiency against the ideal this machine allows
  (min(processes, CPUs) x the 1-process rate; on 2 cores, 2x is the ceiling);
* "database is locked"/busy errors that reached the caller (target: 0 with <= 10 workers);
* duplicate claims (a task id handed to two claims) and lost tasks (filled but never
  completed): both must be 0;
* Jain's fairness index over the tasks each process completed (1.0 = equal shares);
* conflict rate: claims that came back empty while ready tasks existed (the queue still
  had queued tasks afterwards, and nothing is enqueued during a round), per claim.
  Empty claims at the end of a round, when the queue is really empty, are not conflicts.
"""

from __future__ import annotations

import os

from . import _helpers as h

PROCESSES = [1, 2, 4, 8, 16, 20]
TASKS = h.size(2_000, 200)
LIMIT = 10


def measure_all(backend: str = "sqlite") -> dict:
    """Every process count, with one pool of worker processes (the first N take part)."""
    pq = h.pq()
    store = h.Store(backend, "conc")
    path = store.location()
    kids: list[h.Child] = []
    try:
        async def make():
            async with pq.Queue(path, durability="normal"):
                pass

        h.run(make)
        kids = h.start_children("claimloop", [(path, f"w{i}", LIMIT) for i in range(max(PROCESSES))])
        return {str(p): _measure(pq, path, kids[:p]) for p in PROCESSES}
    finally:
        for k in kids:
            k.close()
        store.cleanup()


def _measure(pq, path: str, kids: list) -> dict:
    rounds = []
    for r in range(h.repeats() + 1):  # round 0 warms every connection up
        n = TASKS if r else len(kids) * 10

        async def fill():
            async with pq.Queue(path, durability="normal") as q:
                return await h.fill(q, n, type_="t", seed=10 + r, batch=1000)

        ids = set(h.run(fill))
        for k in kids:
            k.send({"cmd": "go"})
        res = [k.recv() for k in kids]
        got = [i for x in res for i in x["ids"]]
        t0 = min(x["t_first"] for x in res)
        t1 = max(x["t_last"] for x in res)
        claims = sum(x["claims"] for x in res)
        rounds.append({
            "rate": n / (t1 - t0) if t1 > t0 else float("nan"),
            "locked": sum(x["locked"] for x in res),
            "duplicates": len(got) - len(set(got)),
            "lost": len(ids - set(got)),
            "fairness": h.jain([len(x["ids"]) for x in res]),
            "conflict_rate": sum(x["conflicts"] for x in res) / claims if claims else 0.0,
        })
    measured = rounds[1:]
    out = {k: h.median(r[k] for r in measured) for k in ("rate", "fairness", "conflict_rate")}
    # errors are summed over every round, warm-up included: one is one too many
    for k in ("locked", "duplicates", "lost"):
        out[k] = sum(r[k] for r in rounds)
    return out


class WorkerProcesses:
    """N worker processes, each with its own connection, draining one file."""

    params = [h.BACKENDS, PROCESSES]
    param_names = ["backend", "processes"]
    timeout = 300
    version = 1

    def setup(self, backend, processes):
        h.pq()
        h.need_backend(backend)

    def _m(self, backend, processes):
        return h.shared(f"concurrency-{backend}", lambda: measure_all(backend))[str(processes)]

    def track_tasks_per_second(self, backend, processes):
        return self._m(backend, processes)["rate"]

    track_tasks_per_second.unit = "tasks/s"
    track_tasks_per_second.pretty_name = "Concurrency: tasks/s with N worker processes"

    def track_speedup(self, backend, processes):
        return self._m(backend, processes)["rate"] / self._m(backend, 1)["rate"]

    track_speedup.unit = "x 1-process rate"
    track_speedup.pretty_name = "Concurrency: speedup over 1 process"

    def track_scaling_efficiency(self, backend, processes):
        ideal = min(processes, os.cpu_count() or 1) * self._m(backend, 1)["rate"]
        return self._m(backend, processes)["rate"] / ideal

    track_scaling_efficiency.unit = "fraction of ideal"
    track_scaling_efficiency.pretty_name = "Concurrency: rate / (min(N, CPUs) x 1-process rate)"

    def track_locked_errors(self, backend, processes):
        return self._m(backend, processes)["locked"]

    track_locked_errors.unit = "errors"
    track_locked_errors.pretty_name = "Concurrency: 'database is locked' errors reaching the caller"

    def track_duplicate_claims(self, backend, processes):
        return self._m(backend, processes)["duplicates"]

    track_duplicate_claims.unit = "tasks"
    track_duplicate_claims.pretty_name = "Concurrency: tasks claimed twice (must be 0)"

    def track_lost_tasks(self, backend, processes):
        return self._m(backend, processes)["lost"]

    track_lost_tasks.unit = "tasks"
    track_lost_tasks.pretty_name = "Concurrency: tasks never completed (must be 0)"

    def track_fairness(self, backend, processes):
        return self._m(backend, processes)["fairness"]

    track_fairness.unit = "Jain index"
    track_fairness.pretty_name = "Concurrency: Jain fairness of tasks per process"

    def track_conflict_rate(self, backend, processes):
        return self._m(backend, processes)["conflict_rate"]

    track_conflict_rate.unit = "fraction of claims"
    track_conflict_rate.pretty_name = "Concurrency: empty claims while ready tasks existed"
