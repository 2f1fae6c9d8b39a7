"""Throughput: how many tasks per second one process gets through.

* ``TimedDrain`` - the headline: seconds a ``Worker`` (default concurrency 50) takes to
  drain 50,000 queued no-op tasks, a ``time_`` benchmark (asv keeps its samples), shown
  as tasks/s by the report; ``WorkerDrain50k`` - the CPU time the process spends per
  task of the same drain.
* ``WorkerDrain`` - worker counts 1, 5, 10, 20 (handlers at once,
  as ``Worker(concurrency=...)`` in one process; processes are the concurrency family's)
  with a no-op handler and an I/O-bound one (``asyncio.sleep(5 ms)``). For the I/O-bound
  handler the ideal rate is concurrency / 5 ms, so its efficiency against that ideal is
  tracked too.
* ``TimedEnqueue`` - ``enqueue`` one task per call, and ``enqueue_many`` of distinct
  payloads, ``time_`` benchmarks shown as tasks/s.

Each ``track_`` figure is the median of 3 timed repeats on a fresh file after one
warm-up run; each ``time_`` benchmark times one call per sample, on a queue ``setup``
prepared. Sizes are pinned so every commit does the same work. ``TimedDrain`` and
``TimedEnqueue`` have a smaller counterpart on a PostgreSQL server with its default
durability, ``DurablePostgres`` (when ``PRISMQ_BENCH_PG_DURABLE`` names one; ``make
bench`` starts it); every other PostgreSQL figure comes from a server with fsync and
full_page_writes off. ``TimedDrain``, ``WorkerDrain50k`` and ``TimedEnqueue`` also run on PostgreSQL (param ``backend``) when ``PRISMQ_BENCH_PG`` names a server and
the commit has that backend; they are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import time

from . import _helpers as h
from ._base import OnEachBackend

SLEEP = 0.005  # seconds an I/O-bound handler awaits
DRAIN_50K = h.size(50_000, 500)
# no-op drain sizes per concurrency: about 0.3-0.6 s of work each here
NOOP_N = {1: h.size(2_000, 100), 5: h.size(6_000, 200), 10: h.size(10_000, 200), 20: h.size(10_000, 200)}
ENQ_N = h.size(8_000, 100)
ENQ_MANY_N = h.size(100_000, 1_000)
ENQ_MANY_BATCH = 1000
DURABLE_DRAIN = h.size(20_000, 200)
DURABLE_ENQ = h.size(1_000, 50)


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


def _close(bench) -> None:
    """Teardown of a timed benchmark: close its queue and loop, remove its files (after a skip too)."""
    loop = getattr(bench, "loop", None)
    try:
        if loop is not None and getattr(bench, "q", None) is not None:
            loop.run_until_complete(bench.q.close())
    finally:
        h.close_loop(loop)
        if getattr(bench, "store", None) is not None:
            bench.store.cleanup()


class TimedDrain:
    """Seconds one Worker (concurrency 50) takes to drain 50,000 queued no-op tasks.

    A ``time_`` benchmark, so asv keeps every sample and its statistics apply; the
    report shows it as tasks/s (benchmarks/rates.json). ``setup`` fills a fresh queue
    before each sample (``number = 1``: one drain per sample; no warm-up call, which
    would drain the queue before the timed one). Target >= 60,000 tasks/s.
    """

    params = [h.BACKENDS]
    param_names = ["backend"]
    number = 1
    repeat = 3
    warmup_time = 0
    timeout = 300
    # 2: each sample also notes the CPU time of its drain (for WorkerDrain50k, which
    #    drained 50,000 tasks three more times to measure it)
    version = 2

    def setup(self, backend):
        pq = h.pq()
        self.cpu_us = None
        self.store = h.Store(backend, "tdrain")
        self.loop = h.new_loop()
        self.q = pq.Queue(self.store.location(), durability="normal")
        self.loop.run_until_complete(self.q.open())
        self.loop.run_until_complete(h.fill(self.q, DRAIN_50K, type_="t"))
        self.done = 0

        async def handler(task):  # a coroutine: a plain function would run in a thread pool
            self.done += 1

        self.worker = pq.Worker(self.q, concurrency=50, lease_seconds=60)
        self.worker.register("t", handler)

    def teardown(self, backend):
        # asv tears down after every sample: the sample's CPU time is kept here, outside the timing
        if getattr(self, "cpu_us", None) is not None:
            h.record(cpu_key(backend), self.cpu_us)
            self.cpu_us = None
        _close(self)

    def time_drain_50k(self, backend):
        c0 = time.process_time()
        self.loop.run_until_complete(self.worker.run(until_empty=True))
        cpu = time.process_time() - c0
        if self.done != DRAIN_50K:
            raise RuntimeError(f"worker ran {self.done} of {DRAIN_50K} tasks")
        self.cpu_us = cpu / DRAIN_50K * 1e6

    time_drain_50k.tasks_per_call = 50_000
    time_drain_50k.pretty_name = "Throughput: Worker draining 50k no-op tasks (s; report: tasks/s)"


def cpu_key(backend: str) -> str:
    """Where TimedDrain's samples keep the CPU time per task of their drains."""
    return f"drain50k-cpu-{backend}"


class WorkerDrain50k(OnEachBackend):
    """CPU time per task of one Worker (concurrency 50) draining 50,000 queued no-op tasks.

    The drain is TimedDrain's: each of its samples notes the CPU time (all threads of the
    process) its drain took, and this figure is the median over those samples of the run
    (asv runs TimedDrain first: 6 samples a commit, or the last round's 3 when asv
    interleaves rounds between commits, as `asv continuous` does). Run without TimedDrain
    (``--bench`` selecting this one alone, or TimedDrain failed), it drains 50,000 tasks
    itself: a warm-up, then the median of 3 drains, the same workload.
    """

    unit = "us CPU/task"
    timeout = 300
    # 2: the median over TimedDrain's samples of the same drain (was 3 drains of its own,
    #    18 s of a run on both backends)
    version = 2

    def _m(self, backend):
        samples = h.recorded(cpu_key(backend))
        if len(samples) >= h.repeats():
            return {"cpu_us": h.median(samples)}
        return self._measure(backend)

    def _measure(self, backend):
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

    def track_cpu_per_task(self, backend):
        return self._m(backend)["cpu_us"]

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


class DurablePostgres:
    """Seconds to drain 20,000 tasks, and to enqueue 1,000 one per call, on a PostgreSQL
    server with its default durability (fsync and full_page_writes on): what a deployment
    gets. Every other PostgreSQL figure comes from a server with both off. Smaller sizes
    than TimedDrain / TimedEnqueue: each enqueue waits for a flush to disk here.
    """

    number = 1
    repeat = 2
    warmup_time = 0
    timeout = 300
    version = 1

    def setup(self):
        pq = h.pq()
        self.store = h.Store("postgresql_durable", "dur")
        self.loop = h.new_loop()
        self.q = pq.Queue(self.store.location(), durability="normal")
        self.loop.run_until_complete(self.q.open())
        self.loop.run_until_complete(self.q.enqueue("warm", {"n": -1}))
        self.loop.run_until_complete(h.fill(self.q, DURABLE_DRAIN, type_="t"))
        self.one = h.payloads(DURABLE_ENQ, seed=2)
        self.done = 0

        async def handler(task):
            self.done += 1

        self.worker = pq.Worker(self.q, concurrency=50, lease_seconds=60)
        self.worker.register("t", handler)
        self.worker.register("warm", handler)

    def teardown(self):
        _close(self)

    def time_drain_20k(self):
        self.loop.run_until_complete(self.worker.run(until_empty=True))
        if self.done != DURABLE_DRAIN + 1:
            raise RuntimeError(f"worker ran {self.done} of {DURABLE_DRAIN + 1} tasks")

    time_drain_20k.tasks_per_call = 20_000
    time_drain_20k.pretty_name = "Throughput: PostgreSQL, default durability: Worker draining 20k (s; report: tasks/s)"

    def time_enqueue_1k(self):
        async def go():
            for p in self.one:
                await self.q.enqueue("e", p)

        self.loop.run_until_complete(go())

    time_enqueue_1k.tasks_per_call = 1_000
    time_enqueue_1k.pretty_name = "Throughput: PostgreSQL, default durability: enqueue 1k, one per call (s; report: tasks/s)"


_PAYLOADS: list = []


def _enqueue_payloads() -> tuple:
    """TimedEnqueue's payloads, made once per benchmark process instead of in every
    sample's setup (0.12 s of CPU each, 24 samples a run). enqueue and enqueue_many only
    read them (they serialise each payload), so every sample enqueues the same values."""
    if not _PAYLOADS:
        _PAYLOADS.append((h.payloads(ENQ_N, seed=2),
                          list(h.chunks(h.noop_items(ENQ_MANY_N, seed=3, type_="t"), ENQ_MANY_BATCH))))
    return _PAYLOADS[0]


class TimedEnqueue:
    """Seconds to enqueue 8,000 tasks one per call, and 100,000 with enqueue_many of 1,000.

    ``time_`` benchmarks (asv keeps the samples); the report shows them as tasks/s
    (benchmarks/rates.json). ``setup`` opens a queue on a fresh file or schema before
    each sample; the payloads are made there too, outside the timing.
    """

    params = [h.BACKENDS]
    param_names = ["backend"]
    number = 1
    repeat = 3
    warmup_time = 0
    timeout = 300
    version = 1

    def setup(self, backend):
        pq = h.pq()
        self.store = h.Store(backend, "tenq")
        self.loop = h.new_loop()
        self.q = pq.Queue(self.store.location(), durability="normal")
        self.loop.run_until_complete(self.q.open())
        # one unmeasured call prepares the connection's statements, as a running producer has
        self.loop.run_until_complete(self.q.enqueue("warm", {"n": -1}))
        self.one, self.many = _enqueue_payloads()

    def teardown(self, backend):
        _close(self)

    def time_enqueue_8k(self, backend):
        async def go():
            for p in self.one:
                await self.q.enqueue("t", p)

        self.loop.run_until_complete(go())

    time_enqueue_8k.tasks_per_call = 8_000
    time_enqueue_8k.pretty_name = "Throughput: enqueue 8k, one task per call (s; report: tasks/s)"

    def time_enqueue_many_100k(self, backend):
        async def go():
            for part in self.many:
                await self.q.enqueue_many(part)

        self.loop.run_until_complete(go())

    time_enqueue_many_100k.tasks_per_call = 100_000
    time_enqueue_many_100k.pretty_name = "Throughput: enqueue_many 100k, 1,000 per call (s; report: tasks/s)"
