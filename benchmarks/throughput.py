"""Throughput: how many tasks per second one process gets through.

* ``WorkerDrain50k`` - the headline: a ``Worker`` (default concurrency 50) draining
  50,000 queued no-op tasks, the workload of the speed target in issue 2; also the CPU
  time the process spends per task, which other load on the machine disturbs far less
  than wall-clock throughput (a steadier signal for regression gates).
* ``WorkerDrain`` - the original design's worker counts (1, 5, 10, 20 handlers at once,
  as ``Worker(concurrency=...)`` in one process; processes are the concurrency family's)
  with a no-op handler and an I/O-bound one (``asyncio.sleep(5 ms)``). For the I/O-bound
  handler the ideal rate is concurrency / 5 ms, so its efficiency against that ideal is
  tracked too.
* ``Enqueue`` - ``enqueue`` one task per call, and ``enqueue_many`` of distinct payloads.

Each figure is the median of 3 timed repeats on a fresh file after one warm-up run;
sizes are pinned so every commit does the same work. ``WorkerDrain50k`` and ``Enqueue``
also run on PostgreSQL (param ``backend``) when ``PRISMQ_BENCH_PG`` names a server and
the commit has that backend; they are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import time

from . import _helpers as h

SLEEP = 0.005  # seconds an I/O-bound handler awaits
DRAIN_50K = h.size(50_000, 500)
# no-op drain sizes per concurrency: about 0.3-0.6 s of work each here
NOOP_N = {1: h.size(2_000, 100), 5: h.size(6_000, 200), 10: h.size(10_000, 200), 20: h.size(10_000, 200)}
ENQ_N = h.size(8_000, 100)
ENQ_MANY_N = h.size(100_000, 1_000)
ENQ_MANY_BATCH = 1000


async def _drain(path: str, n: int, concurrency: int, handler: str, store: h.Store | None = None) -> float:
    """Fill a fresh queue with n tasks, then time a Worker draining it; returns tasks/s."""
    return (await _drain_stats(path, n, concurrency, handler, store))["rate"]


async def _drain_stats(path: str, n: int, concurrency: int, handler: str, store: h.Store | None = None) -> dict:
    """As _drain, and also the CPU time (this process, all threads) per task, in microseconds."""
    pq = h.pq()
    reset = store.reset if store else h.remove_db
    reset(path)
    async with pq.Queue(path, durability="normal") as q:
        await h.fill(q, n, type_="t")
        done = 0
        if handler == "noop":
            async def fn(task):
                nonlocal done
                done += 1
        else:
            async def fn(task):
                nonlocal done
                await asyncio.sleep(SLEEP)
                done += 1
        w = pq.Worker(q, concurrency=concurrency, lease_seconds=60)
        w.register("t", fn)
        t0, c0 = time.perf_counter(), time.process_time()
        await w.run(until_empty=True)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    reset(path)
    if done != n:
        raise RuntimeError(f"worker ran {done} of {n} tasks")
    return {"rate": n / dt, "cpu_us": cpu / n * 1e6}


def _size(concurrency: int, handler: str) -> int:
    if handler == "noop":
        return NOOP_N[concurrency]
    return h.size(int(0.3 * concurrency / SLEEP), 4 * concurrency)  # ~0.3 s at the ideal rate


def measure_drain(concurrency: int, handler: str) -> float:
    tmp = h.TempDir()
    try:
        n = _size(concurrency, handler)
        h.run(_drain, tmp.file(), max(20, n // 5), concurrency, handler)  # warm-up
        return h.median(h.run(_drain, tmp.file(), n, concurrency, handler) for _ in range(h.repeats()))
    finally:
        tmp.cleanup()


class WorkerDrain50k:
    """One Worker (concurrency 50) draining 50,000 queued no-op tasks; target >= 60,000 tasks/s."""

    params = [h.BACKENDS]
    param_names = ["backend"]
    unit = "tasks/s"
    timeout = 300
    version = 1

    def setup(self, backend):
        h.pq()
        h.need_backend(backend)

    def _m(self, backend):
        def measure():
            store = h.Store(backend, "drain")
            try:
                loc = store.location()
                h.run(_drain, loc, h.size(5_000, 100), 50, "noop", store)  # warm-up
                runs = [h.run(_drain_stats, loc, DRAIN_50K, 50, "noop", store) for _ in range(h.repeats())]
                return {k: h.median(r[k] for r in runs) for k in ("rate", "cpu_us")}
            finally:
                store.cleanup()

        return h.shared(f"drain50k-{backend}", measure)

    def track_tasks_per_second(self, backend):
        return self._m(backend)["rate"]

    track_tasks_per_second.pretty_name = "Throughput: Worker draining 50k no-op tasks (tasks/s)"

    def track_cpu_per_task(self, backend):
        return self._m(backend)["cpu_us"]

    track_cpu_per_task.unit = "us CPU/task"
    track_cpu_per_task.pretty_name = "Throughput: CPU time per task, Worker draining 50k (us, this process)"


class WorkerDrain:
    """Worker(concurrency=c) draining queued tasks, no-op or I/O-bound handler."""

    params = [[1, 5, 10, 20], ["noop", "sleep"]]
    param_names = ["concurrency", "handler"]
    timeout = 300
    version = 1

    def setup(self, concurrency, handler):
        h.pq()

    def _rate(self, concurrency, handler):
        return h.shared(f"drain-{concurrency}-{handler}", lambda: measure_drain(concurrency, handler))

    def track_tasks_per_second(self, concurrency, handler):
        return self._rate(concurrency, handler)

    track_tasks_per_second.unit = "tasks/s"
    track_tasks_per_second.pretty_name = "Throughput: Worker drain by concurrency and handler (tasks/s)"


class IOBoundEfficiency:
    """Worker(concurrency=c) with a handler that awaits 5 ms: rate / (c / 5 ms)."""

    params = [[1, 5, 10, 20]]
    param_names = ["concurrency"]
    unit = "fraction of ideal"
    timeout = 300
    version = 1

    def setup(self, concurrency):
        h.pq()

    def track_efficiency(self, concurrency):
        rate = h.shared(f"drain-{concurrency}-sleep", lambda: measure_drain(concurrency, "sleep"))
        return rate / (concurrency / SLEEP)

    track_efficiency.pretty_name = "Throughput: I/O-bound drain rate / (concurrency / sleep time)"


async def _enqueue_one(store: h.Store, path: str, n: int) -> float:
    pq = h.pq()
    store.reset(path)
    items = h.payloads(n, seed=2)
    async with pq.Queue(path, durability="normal") as q:
        t0 = time.perf_counter()
        for p in items:
            await q.enqueue("t", p)
        dt = time.perf_counter() - t0
    store.reset(path)
    return n / dt


async def _enqueue_many(store: h.Store, path: str, n: int) -> float:
    pq = h.pq()
    store.reset(path)
    items = h.noop_items(n, seed=3, type_="t")
    async with pq.Queue(path, durability="normal") as q:
        t0 = time.perf_counter()
        for part in h.chunks(items, ENQ_MANY_BATCH):
            await q.enqueue_many(part)
        dt = time.perf_counter() - t0
    store.reset(path)
    return n / dt


class Enqueue:
    """Producing: enqueue one task per call, and enqueue_many of 1,000 distinct payloads per call."""

    params = [h.BACKENDS]
    param_names = ["backend"]
    unit = "tasks/s"
    timeout = 300
    version = 2  # 2: 8,000 / 100,000 tasks (was 5,000 / 50,000), for steadier medians

    def setup(self, backend):
        h.pq()
        self.store = h.Store(backend, "enq")

    def teardown(self, backend):
        if getattr(self, "store", None) is not None:  # asv tears down after a skipped setup too
            self.store.cleanup()

    def _measure(self, fn, n):
        loc = self.store.location()
        h.run(fn, self.store, loc, max(50, n // 10))  # warm-up
        return h.median(h.run(fn, self.store, loc, n) for _ in range(h.repeats()))

    def track_enqueue(self, backend):
        return self._measure(_enqueue_one, ENQ_N)

    track_enqueue.pretty_name = "Throughput: enqueue, one task per call (tasks/s)"

    def track_enqueue_many(self, backend):
        return self._measure(_enqueue_many, ENQ_MANY_N)

    track_enqueue_many.pretty_name = "Throughput: enqueue_many, 1,000 distinct tasks per call (tasks/s)"
