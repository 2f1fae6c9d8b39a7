"""Latency: from ``enqueue`` to the handler starting, and to the task's completion.

A ``Worker`` (concurrency 50) runs in the benchmark process. Tasks carry the time they
were enqueued (``time.monotonic()``, one clock for every process on Linux); the handler
notes when it starts. A task counts as *completed* when its outcome is committed and
visible to another connection: a second ``Queue`` in the benchmark process polls
``get(id)`` for the started tasks, oldest first, and notes when each reads
``completed``. Polling resolution is one ``get`` round trip (about 0.1 ms here).

Four scenarios, each the median over 3 repeats of the percentile within a repeat:

* producer in the same process or in another process (the worker then has to notice
  another connection's commit: the cross-process wake-up path);
* light load: one task at a time (same process: enqueue, wait until it is completed,
  pause 0.5 ms; other process: one task every 2 ms), 800 tasks per repeat; or steady
  load: a pinned ``STEADY_BATCH`` tasks every 2 ms (2,500 tasks/s, well below what one
  Worker drains on this machine), for 0.6 s per repeat. The load is a constant, so
  every commit gets the same work. Under steady load the first task of each batch is
  followed to completion (one sample per batch).

``IdleWorker``: the CPU an idle Worker in its own process burns while it waits for work
(target < 3 % of a core), measured over whole poll intervals (total CPU / total time
over 5 intervals), so a cost paid once per wake-up is counted: the window holds 5 wake-ups,
or 4 when load stretches each trip a little past the interval.
Both also run on PostgreSQL (param ``backend``) when ``PRISMQ_BENCH_PG`` names a server.
"""

from __future__ import annotations

import asyncio
import collections
import time

from . import _helpers as h
from ._base import OnEachBackend

LIGHT_N = h.size(800, 20)
STEADY_SECONDS = 0.6 if not h.SMOKE else 0.1
STEADY_BATCH = 5  # tasks per batch under steady load: 5 every 2 ms = 2,500 tasks/s
INTERVAL = 0.002
IDLE_INTERVALS = 5 if not h.SMOKE else 2  # whole poll intervals of the idle Worker
SCENARIOS = ["same-light", "same-steady", "other-light", "other-steady"]


def _is_completed(task) -> bool:
    status = getattr(task, "status", None)
    return str(getattr(status, "value", status)) == "completed"


class _CompletionWatch:
    """Polls, on a connection of its own, until each followed task reads completed."""

    def __init__(self, q2):
        self.q2 = q2
        self.pending: collections.deque = collections.deque()
        self.done: dict[int, float] = {}
        self.changed = asyncio.Event()
        self._stop = False

    def follow(self, task_id: int) -> None:
        self.pending.append(task_id)

    async def run(self) -> None:
        while not self._stop:
            if not self.pending:
                await asyncio.sleep(0.0001)
                continue
            tid = self.pending[0]
            task = await self.q2.get(tid)
            if task is not None and _is_completed(task):
                self.done[tid] = time.monotonic()
                self.pending.popleft()
                self.changed.set()
            else:
                await asyncio.sleep(0.0001)

    def stop(self) -> None:
        self._stop = True


async def _scenario(loc: str, where: str, load: str, rounds: int) -> dict:
    """Run `rounds` repeats (the first one a short warm-up, dropped) of one scenario."""
    pq = h.pq()
    batch = 1 if load == "light" else STEADY_BATCH
    async with pq.Queue(loc, durability="normal") as q, pq.Queue(loc, durability="normal") as q2:
        starts: dict[int, float] = {}
        t0s: dict[int, float] = {}
        watch = _CompletionWatch(q2)

        async def handler(task):
            now = time.monotonic()
            starts[task.id] = now
            t0s[task.id] = task.payload["t0"]
            if task.payload["i"] % batch == 0:
                watch.follow(task.id)

        w = pq.Worker(q, concurrency=50, lease_seconds=60)
        w.register("lat", handler)
        w.register("warmup", lambda task: None)
        runner = asyncio.ensure_future(w.run())
        watcher = asyncio.ensure_future(watch.run())
        kid = h.start_children("producer", [(loc,)])[0] if where == "other" else None
        results = []
        try:
            for r in range(rounds):
                starts.clear(), t0s.clear(), watch.done.clear()
                if load == "light":
                    n = LIGHT_N if r else max(5, LIGHT_N // 10)
                else:
                    n = batch * (max(5, round(STEADY_SECONDS / INTERVAL)) if r else 20)
                followed = (n + batch - 1) // batch
                if where == "same" and load == "light":
                    for i in range(n):  # one task at a time: the next once this one completed
                        await q.enqueue("lat", {"t0": time.monotonic(), "i": i})
                        while len(watch.done) <= i:
                            watch.changed.clear()
                            await asyncio.wait_for(watch.changed.wait(), 30)
                        await asyncio.sleep(0.0005)
                elif where == "same":
                    await h.produce(q, n, INTERVAL, batch)
                else:
                    kid.send({"cmd": "produce", "n": n, "interval": INTERVAL, "batch": batch})
                    await asyncio.get_running_loop().run_in_executor(None, kid.recv)
                deadline = time.monotonic() + 60
                while (len(starts) < n or len(watch.done) < followed) and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                if len(starts) < n or len(watch.done) < followed:
                    raise RuntimeError(f"{len(starts)} of {n} tasks started, {len(watch.done)} of "
                                       f"{followed} followed seen completed")
                if r:
                    start_ms = [(starts[i] - t0s[i]) * 1000 for i in starts]
                    done_ms = [(watch.done[i] - t0s[i]) * 1000 for i in watch.done]
                    res = {}
                    for p in (50, 95, 99):
                        res[f"start_p{p}"] = h.percentile(start_ms, p)
                        res[f"done_p{p}"] = h.percentile(done_ms, p)
                    results.append(res)
        finally:
            if kid is not None:
                kid.close()
            watch.stop()
            await watcher
            w.stop()
            await runner
    return {k: h.median(x[k] for x in results) for k in results[0]}


def measure_all(backend: str = "sqlite") -> dict:
    store = h.Store(backend, "lat")
    try:
        out = {"load": {"steady_tasks_per_s": STEADY_BATCH / INTERVAL, "steady_batch": STEADY_BATCH}}
        for sc in SCENARIOS:
            where, load = sc.split("-")
            out[sc] = h.run(_scenario, store.location(sc.replace("-", "_")), where, load, h.repeats() + 1)
        return out
    finally:
        store.cleanup()


class EnqueueToHandler(OnEachBackend):
    """Latency percentiles (ms) from enqueue to handler start and to completion."""

    params = [h.BACKENDS, SCENARIOS, ["p50", "p95", "p99"]]
    param_names = ["backend", "scenario", "percentile"]
    unit = "ms"
    timeout = 300
    # 3: completion = committed and seen by another connection (was finished_at, stamped
    #    before the acknowledgement); steady load pinned at 2,500 tasks/s (was half the
    #    capacity measured in the same run)
    version = 3


    def _get(self, backend, scenario, key):
        return h.shared(f"latency-{backend}", lambda: measure_all(backend))[scenario][key]

    def track_to_start(self, backend, scenario, percentile):
        return self._get(backend, scenario, "start_" + percentile)

    track_to_start.pretty_name = "Latency: enqueue -> handler start (ms)"

    def track_to_completion(self, backend, scenario, percentile):
        return self._get(backend, scenario, "done_" + percentile)

    track_to_completion.pretty_name = "Latency: enqueue -> completed, seen by another connection (ms)"


def measure_idle(backend: str = "sqlite") -> float:
    """% of one core an idle Worker process uses: total CPU / total time over whole poll intervals."""
    store = h.Store(backend, "idle")
    try:
        loc = store.location()

        async def make():
            async with h.pq().Queue(loc, durability="normal"):
                pass

        h.run(make)
        kid = h.start_children("idle", [(loc, IDLE_INTERVALS)])[0]
        try:
            res = kid.recv()
        finally:
            kid.close()
        return 100.0 * res["cpu"] / res["wall"]
    finally:
        store.cleanup()


class IdleWorker(OnEachBackend):
    """CPU an idle Worker in its own process burns while polling for work."""

    unit = "% of a core"
    timeout = 120
    version = 2  # 2: total CPU / time over 5 whole poll intervals (was the median of 0.5 s windows)


    def track_idle_cpu(self, backend):
        return h.shared(f"idle-cpu-{backend}", lambda: measure_idle(backend))

    track_idle_cpu.pretty_name = "Latency: idle Worker CPU use (% of one core)"
