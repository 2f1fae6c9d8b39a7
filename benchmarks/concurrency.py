"""Concurrency: 1, 2, 4, 8, 16 and 20 worker *processes* on one SQLite file.

(With ``PRISMQ_BENCH_PG`` set, the same on PostgreSQL: param ``backend``.)
Each worker process opens its own Queue (its own connection) and loops
``claim(limit=10)`` / ``complete`` until the queue is empty, so SQLite's single-writer
lock is really contended. One pool of 20 processes is started once; for each process
count the first N of them switch to a fresh file of their own (so every count starts
on an empty table), which the parent fills with a pinned number of no-op tasks. Every
round starts all N processes at one shared moment (a start time sent ahead to each).
Measured per process count, over rounds of 2,000 tasks on SQLite and 1,000 on PostgreSQL
(median of 3 rounds after a warm-up round; PostgreSQL's claim/complete round trips are
several times slower: 1,000 tasks there last longer than 2,000 here, and leave 50 per
process at 20 processes):

* tasks/s from the shared start to the last completion;
* "database is locked"/busy errors that reached the caller (target: 0 with <= 10 workers);
* duplicate claims (a task id handed out by two claims; the stale holder's ``complete``
  is refused with LeaseLost and counted, not raised) and lost tasks (filled but never
  completed): both must be 0;
* conflict rate: claims that came back empty while ready tasks existed, per claim;

and from 2 processes up (at 1 process they are 1.0 by definition):

* speedup over 1 process and scaling efficiency against the ideal this machine allows
  (min(processes, CPUs) x the 1-process rate; on 2 cores, 2x is the ceiling);
* Jain's fairness index over the tasks each process completed (1.0 = equal shares).
"""

from __future__ import annotations

import os

from . import _helpers as h
from ._base import OnEachBackend, figure

PROCESSES = [1, 2, 4, 8, 16, 20]
# tasks per measured round, per backend: each round lasts about 0.3-3 s on either
TASKS = {"sqlite": h.size(2_000, 200), "postgresql": h.size(1_000, 100)}
LIMIT = 10
# seconds between sending the start time and the start: every child has read it by then (the
# last of 20 waiting children read a line 7-15 ms after it was sent, at a load average of 8
# here). Waited out before every round: 48 rounds a commit, so 0.2 s cost 10 s of waiting.
START_AHEAD = 0.1


def measure_all(backend: str = "sqlite", processes: list[int] = PROCESSES) -> dict:
    """Every process count, with one pool of worker processes (the first N take part)."""
    pq = h.pq()
    store = h.Store(backend, "conc")
    kids: list[h.Child] = []
    try:
        locs = {p: store.location(f"p{p}") for p in processes}

        async def make(loc):
            async with pq.Queue(loc, durability="normal"):
                pass

        for loc in locs.values():
            h.run(make, loc)
        kids = h.start_children("claimloop", [(locs[processes[0]], f"w{i}", LIMIT) for i in range(max(processes))])
        out = {}
        for p in processes:
            for k in kids[:p]:
                k.send({"cmd": "open", "path": locs[p]})
            for k in kids[:p]:
                if not k.recv().get("ready"):
                    raise RuntimeError("worker process could not open its queue")
            out[str(p)] = _measure(pq, locs[p], kids[:p], TASKS[backend])
        return out
    finally:
        for k in kids:
            k.close()
        store.cleanup()


def _measure(pq, loc: str, kids: list, tasks: int) -> dict:
    rounds = []
    for r in range(h.repeats() + 1):  # round 0 warms every connection up
        n = tasks if r else len(kids) * 10

        async def fill():
            async with pq.Queue(loc, durability="normal") as q:
                return await h.fill(q, n, type_="t", seed=10 + r, batch=1000)

        ids = set(h.run(fill))
        start = h.now() + START_AHEAD
        for k in kids:
            k.send({"cmd": "go", "at": start})
        res = [k.recv() for k in kids]
        claimed = [i for x in res for i in x.get("claimed", x["ids"])]
        done = {i for x in res for i in x["ids"]}
        ends = [x["t_last"] for x in res if x.get("t_last") is not None]
        claims = sum(x["claims"] for x in res)
        rounds.append({
            "rate": n / (max(ends) - start) if ends and max(ends) > start else float("nan"),
            "locked": sum(x["locked"] for x in res),
            "duplicates": len(claimed) - len(set(claimed)),
            "lost": len(ids - done),
            "fairness": h.jain([len(x["ids"]) for x in res]),
            "conflict_rate": sum(x["conflicts"] for x in res) / claims if claims else 0.0,
        })
    measured = rounds[1:]
    out = {k: h.median(r[k] for r in measured) for k in ("rate", "fairness", "conflict_rate")}
    # errors are summed over every round, warm-up included: one is one too many
    for k in ("locked", "duplicates", "lost"):
        out[k] = sum(r[k] for r in rounds)
    return out


def _shared(backend):
    return h.shared(f"concurrency-{backend}", lambda: measure_all(backend))


class WorkerProcesses(OnEachBackend):
    """N worker processes, each with its own connection, draining one file."""

    params = [h.BACKENDS, PROCESSES]
    param_names = ["backend", "processes"]
    timeout = 300
    # 2: a fresh file per process count, one shared start time, a refused stale
    #    complete counted as a duplicate instead of failing the family
    # 3: 1,000 tasks per round on PostgreSQL (was 2,000: 82 s of a run at load 15)
    # 4: the shared start 0.1 s after the start message (was 0.2 s)
    version = 4

    def _m(self, backend, processes):
        return _shared(backend)[str(processes)]

    @figure("tasks/s", "Concurrency: tasks/s with N worker processes")
    def track_tasks_per_second(self, backend, processes):
        return self._m(backend, processes)["rate"]

    @figure("errors", "Concurrency: 'database is locked' errors reaching the caller")
    def track_locked_errors(self, backend, processes):
        return self._m(backend, processes)["locked"]

    @figure("tasks", "Concurrency: tasks claimed twice (must be 0)")
    def track_duplicate_claims(self, backend, processes):
        return self._m(backend, processes)["duplicates"]

    @figure("tasks", "Concurrency: tasks never completed (must be 0)")
    def track_lost_tasks(self, backend, processes):
        return self._m(backend, processes)["lost"]

    @figure("fraction of claims", "Concurrency: empty claims while ready tasks existed")
    def track_conflict_rate(self, backend, processes):
        return self._m(backend, processes)["conflict_rate"]


class Scaling(OnEachBackend):
    """How N worker processes compare with one: figures that are 1.0 by definition at N = 1."""

    params = [h.BACKENDS, PROCESSES[1:]]
    param_names = ["backend", "processes"]
    timeout = 300
    # 2: 1,000 tasks per round on PostgreSQL (was 2,000)
    # 3: the shared start 0.1 s after the start message (was 0.2 s)
    version = 3

    @figure("x 1-process rate", "Concurrency: speedup over 1 process")
    def track_speedup(self, backend, processes):
        m = _shared(backend)
        return m[str(processes)]["rate"] / m["1"]["rate"]

    @figure("fraction of ideal", "Concurrency: rate / (min(N, CPUs) x 1-process rate)")
    def track_scaling_efficiency(self, backend, processes):
        m = _shared(backend)
        ideal = min(processes, os.cpu_count() or 1) * m["1"]["rate"]
        return m[str(processes)]["rate"] / ideal

    @figure("Jain index", "Concurrency: Jain fairness of tasks per process")
    def track_fairness(self, backend, processes):
        return _shared(backend)[str(processes)]["fairness"]
