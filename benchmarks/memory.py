"""Memory: peak RSS of enqueueing and of processing 100,000 tasks, and RSS growth over cycles.

asv's ``peakmem_`` reports the peak resident set size of the whole benchmark process
(interpreter, imports and setup included); setup keeps its own footprint small (the
queue to process is filled by a child process), so what the figure adds over an empty
interpreter with prismq_queue imported is the cost of the operation.

``Growth`` runs repeated cycles in one process (open a Queue on a fresh file, enqueue
5,000 tasks with enqueue_many, drain them with a Worker, close) and reports how much
the memory after the last cycle exceeds the memory after the third (the first two warm
caches): the RSS (median of 3 runs), and the Python objects ``tracemalloc`` traces (one
run of 1,000-task cycles). Leak-free code reads about 0; a leak shows as a step.
"""

from __future__ import annotations

from . import _helpers as h

N = h.size(100_000, 1_000)
CYCLE = h.size(5_000, 200)
CYCLES = 6 if not h.SMOKE else 3
TRACED_CYCLE = h.size(1_000, 200)  # tasks per cycle of the tracemalloc run


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    import resource

    return pages * resource.getpagesize() / 2**20


class Peak:
    """Peak RSS while enqueueing, or processing, 100,000 tasks in one process."""

    timeout = 300
    version = 1

    def setup(self):
        self.pq = h.pq()
        self.tmp = h.TempDir()
        self.path = self.tmp.file()

    def teardown(self):
        if getattr(self, "tmp", None) is not None:  # asv tears down after a skipped setup too
            self.tmp.cleanup()

    def peakmem_reference(self):
        """Nothing: the peak RSS of the benchmark process itself (interpreter, imports, setup),
        the baseline the other two figures are read against."""

    peakmem_reference.pretty_name = "Memory: peak RSS of the benchmark process doing nothing (baseline)"

    def peakmem_enqueue_100k(self):
        pq = self.pq

        async def go():
            async with pq.Queue(self.path, durability="normal") as q:
                for start in range(0, N, 1000):
                    await q.enqueue_many([("t", {"n": i, "k": i * 7}) for i in range(start, start + 1000)])

        h.run(go)

    peakmem_enqueue_100k.pretty_name = "Memory: peak RSS, enqueue_many of 100k tasks"

    def peakmem_process_100k(self):
        pq = self.pq
        kid = h.start_children("fill", [(self.path, N, "t")])[0]
        kid.close()

        async def go():
            async with pq.Queue(self.path, durability="normal") as q:
                w = pq.Worker(q, concurrency=50)
                w.register("t", lambda task: None)
                await w.run(until_empty=True)
                st = await q.stats()
                if st["by_status"].get("completed") != N:
                    raise RuntimeError(f"processed {st['by_status']} of {N}")

        h.run(go)

    peakmem_process_100k.pretty_name = "Memory: peak RSS, a Worker processing 100k tasks"


def _trim() -> None:
    """Hand free heap pages back to the system (glibc), so RSS counts memory in use.

    SQLite's page cache is allocated in the connection thread's malloc arena; freed, it
    stays in the process until trimmed, by an amount that depends on which arena served
    it: leak-free runs read 0.0 to 2.0 MiB of growth without this.
    """
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS as it is


def growth(tmpdir: str, cycles: int = CYCLES, cycle: int = CYCLE, traced: bool = False) -> float:
    """RSS (or, traced, the Python objects tracemalloc sees) after the last cycle minus after the third (MiB).

    Each cycle opens a Queue on a fresh file, enqueues `cycle` tasks, drains them with a
    new Worker and closes the Queue: nothing a cycle made is still needed by the next,
    so leak-free code reads about 0. (On one file the finished rows pile up and SQLite's
    page cache grows with them, about 0.7 MiB per cycle, which is not a leak.)
    """
    import gc
    import os
    import tracemalloc

    pq = h.pq()

    async def one(path: str, c: int) -> None:
        async with pq.Queue(path, durability="normal") as q:
            w = pq.Worker(q, concurrency=50)
            w.register("t", lambda task: None)
            await h.fill(q, cycle, type_="t", seed=c, batch=1000)
            await w.run(until_empty=True)

    after = []
    if traced:
        tracemalloc.start()
    try:
        for c in range(cycles):
            path = os.path.join(tmpdir, f"g{c}.db")
            h.run(one, path, c)
            h.remove_db(path)
            gc.collect()
            if traced:
                after.append(tracemalloc.get_traced_memory()[0] / 2**20)
            else:
                _trim()
                after.append(rss_mib())
    finally:
        if traced:
            tracemalloc.stop()
    return after[-1] - after[2]


def measure_growth() -> dict:
    tmp = h.TempDir()
    try:
        growth(tmp.path, cycles=3)  # warm-up: the first run in a process settles its heap
        rss = h.median(growth(tmp.path) for _ in range(h.repeats()))
        # tracemalloc makes the run about 5x slower: one run, of smaller cycles
        return {"rss": rss, "python": growth(tmp.path, cycle=TRACED_CYCLE, traced=True)}
    finally:
        tmp.cleanup()


class Growth:
    """Memory left behind by enqueue+drain cycles of 5,000 tasks: an empty-handed cycle leaves none."""

    unit = "MiB"
    timeout = 300
    version = 2  # 2: a fresh file per cycle (the page cache of one growing file read as 2.9 MiB)

    def setup(self):
        h.pq()

    def track_rss_growth(self):
        return h.shared("memory-growth", measure_growth)["rss"]

    track_rss_growth.pretty_name = "Memory: RSS growth over 6 enqueue+drain cycles of 5k (MiB)"

    def track_python_growth(self):
        return h.shared("memory-growth", measure_growth)["python"]

    track_python_growth.pretty_name = "Memory: Python objects (tracemalloc) growth over 6 cycles of 1k (MiB)"
