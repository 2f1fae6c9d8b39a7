"""Memory: peak RSS of enqueueing and of processing 100,000 tasks, and RSS growth over cycles.

asv's ``peakmem_`` reports the peak resident set size of the whole benchmark process
(interpreter, imports and setup included); setup keeps its own footprint small (the
queue to process is filled by a child process), so what the figure adds over an empty
interpreter with prismq_queue imported is the cost of the operation.

``track_rss_growth`` runs repeated cycles in one process (enqueue 5,000 tasks with
enqueue_many, drain them with a Worker) and reports how much the RSS after the last
cycle exceeds the RSS after the second (the first warms caches): a leak shows as a step
on the dashboard. The median of 3 such runs, each on a fresh file.
"""

from __future__ import annotations

import time

from . import _helpers as h

N = h.size(100_000, 1_000)
CYCLE = h.size(5_000, 200)
CYCLES = 6 if not h.SMOKE else 3


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


def _growth(path: str) -> float:
    pq = h.pq()

    async def go():
        rss = []
        async with pq.Queue(path, durability="normal") as q:
            w = pq.Worker(q, concurrency=50)
            w.register("t", lambda task: None)
            for c in range(CYCLES):
                await h.fill(q, CYCLE, type_="t", seed=c, batch=1000)
                await w.run(until_empty=True)
                rss.append(rss_mib())
        return rss[-1] - rss[1]

    h.remove_db(path)
    try:
        return h.run(go)
    finally:
        h.remove_db(path)


class Growth:
    unit = "MiB"
    timeout = 300
    version = 1

    def setup(self):
        h.pq()

    def track_rss_growth(self):
        def measure():
            tmp = h.TempDir()
            try:
                return h.median(_growth(tmp.file(f"g{i}.db")) for i in range(h.repeats()))
            finally:
                tmp.cleanup()

        return h.shared("rss-growth", measure)

    track_rss_growth.pretty_name = "Memory: RSS growth over 6 enqueue+drain cycles of 5k (MiB)"
