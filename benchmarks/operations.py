"""Operations: the cost of single calls at queue depths of 1,000 and 1,000,000 rows.

Targets (benchmarks/README.md): enqueue < 10 ms, claim < 20 ms, status query (``get``)
< 5 ms, and one claim at 1,000,000 rows within 1.5x of one at 1,000.

The two files are built once per run with ``setup_cache``: a task is enqueued, claimed
and completed through the API, and its finished row is copied by SQL until the table
holds the depth (so every row looks like one the queue wrote itself; copying in SQL
takes seconds where enqueueing a million tasks would take much longer); then 100 ready
tasks are enqueued through the API. So both depths hold 100 queued tasks and the rest
finished, as a long-lived queue does. Each timed call is followed (in teardown) by
deleting the rows it added, so the depth stays what the parameter says.
"""

from __future__ import annotations

import os
import sqlite3
import time

from . import _helpers as h

DEPTHS = [1_000, 1_000_000]
READY = 100


def _depth(depth: int) -> int:
    return depth if not h.SMOKE else min(depth, 5_000)


def _table(conn: sqlite3.Connection, task_id: int) -> tuple[str, list[str]]:
    """The table that holds the tasks (has id and status columns and our row)."""
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        cols = [r[1] for r in conn.execute(f'PRAGMA table_info("{name}")').fetchall()]
        if "id" in cols and "status" in cols:
            if conn.execute(f'SELECT 1 FROM "{name}" WHERE id = ?', (task_id,)).fetchone():
                return name, cols
    raise NotImplementedError("cannot find the task table to build a deep queue")


def build(path: str, depth: int) -> dict:
    pq = h.pq()
    h.remove_db(path)

    async def template():
        async with pq.Queue(path, durability="normal") as q:
            tid = await q.enqueue("t", {"n": 0, "k": 12345})
            (task,) = await q.claim("builder", limit=1)
            await q.complete(task, None)
            return tid

    tid = h.run(template)
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        table, cols = _table(conn, tid)
        copy = ", ".join(f'"{c}"' for c in cols if c != "id")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            f'INSERT INTO "{table}" ({copy}) '
            f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            f'SELECT {copy} FROM "{table}", n WHERE "{table}".id = ?',
            (depth - READY - 1, tid))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.close()

    async def ready():
        async with pq.Queue(path, durability="normal") as q:
            ids = await h.fill(q, READY, type_="t", seed=7)
            return ids

    ids = h.run(ready)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        max_id = conn.execute(f'SELECT MAX(id) FROM "{table}"').fetchone()[0]
        rows = conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
    finally:
        conn.close()
    return {"path": path, "table": table, "max_id": max_id, "get_id": max_id // 2 or 1,
            "rows": rows, "ready_ids": ids}


class _DeepFiles:
    """The two deep files, built once per run and shared by every class below."""

    timeout = 600

    def setup_cache(self):
        out = {}
        for d in DEPTHS:
            out[str(d)] = build(os.path.abspath(f"prismq-depth-{d}.db"), _depth(d))
        return out


class _Deep(_DeepFiles):
    """Opens a queue on the deep file in setup; teardown removes what the call added."""

    params = [DEPTHS]
    param_names = ["depth"]
    number = 1
    repeat = (5, 20, 3.0)
    rounds = 2
    warmup_time = 0.0  # setup() makes one untimed call of its own

    def setup(self, cache, depth):
        self.pq = h.pq()
        self.info = cache[str(depth)]
        self.loop = h.new_loop()
        self.q = self.pq.Queue(self.info["path"], durability="normal")
        self.loop.run_until_complete(self.q.open())
        self.prepare()

    def prepare(self):
        pass

    def teardown(self, cache, depth):
        if getattr(self, "loop", None) is None:  # setup skipped (asv tears down anyway)
            return
        try:
            if getattr(self, "q", None) is not None:
                self.loop.run_until_complete(self.q.close())
        finally:
            h.close_loop(self.loop)
        conn = sqlite3.connect(self.info["path"], isolation_level=None, timeout=60)
        try:
            conn.execute(f'DELETE FROM "{self.info["table"]}" WHERE id > ?', (self.info["max_id"],))
        finally:
            conn.close()


class Enqueue(_Deep):
    version = 1

    def prepare(self):
        self.loop.run_until_complete(self.q.enqueue("warm", {"n": -1}))  # statements prepared

    def time_enqueue(self, cache, depth):
        self.loop.run_until_complete(self.q.enqueue("t", {"n": 1, "k": 2}))

    time_enqueue.pretty_name = "Operations: one enqueue (target < 10 ms)"


class EnqueueMany(_Deep):
    version = 1

    def prepare(self):
        self.items = h.noop_items(1000, seed=11, type_="t")
        self.loop.run_until_complete(self.q.enqueue("warm", {"n": -1}))

    def time_enqueue_many_1000(self, cache, depth):
        self.loop.run_until_complete(self.q.enqueue_many(self.items))

    time_enqueue_many_1000.pretty_name = "Operations: enqueue_many of 1,000 tasks"


class ClaimComplete(_Deep):
    """One claim of one task plus its completion; setup adds the task (priority 0: claimed first)."""

    version = 1

    def prepare(self):
        run = self.loop.run_until_complete
        run(self.q.enqueue("warm", {"n": -1}, priority=0))
        (t,) = run(self.q.claim("bench", limit=1))
        run(self.q.complete(t, None))
        run(self.q.enqueue("t", {"n": 1}, priority=0))

    def time_claim_complete(self, cache, depth):
        run = self.loop.run_until_complete
        (t,) = run(self.q.claim("bench", limit=1))
        run(self.q.complete(t, None))

    time_claim_complete.pretty_name = "Operations: claim one task + complete it (target < 20 ms)"


class Get(_Deep):
    version = 1

    def prepare(self):
        self.loop.run_until_complete(self.q.get(self.info["get_id"]))

    def time_get(self, cache, depth):
        self.loop.run_until_complete(self.q.get(self.info["get_id"]))

    time_get.pretty_name = "Operations: get one task's status (target < 5 ms)"


class Stats(_Deep):
    version = 1
    repeat = (2, 5, 2.0)  # one call takes about a second at 1M rows

    def prepare(self):
        # a get() opens the connection's read path; a full stats() here would double
        # the cost of every sample at 1M rows (about a second each)
        self.loop.run_until_complete(self.q.get(self.info["get_id"]))

    def time_stats(self, cache, depth):
        self.loop.run_until_complete(self.q.stats())

    time_stats.pretty_name = "Operations: stats()"


class ClaimDepthRatio(_DeepFiles):
    """Time of one claim+complete at 1,000,000 rows / at 1,000 (target <= 1.5)."""

    unit = "ratio"
    version = 2  # 2: 1,000 claims per depth and repeat (was 300)

    def setup(self, cache):
        self.pq = h.pq()
        self.cache = cache

    def teardown(self, cache):
        pass

    def _median_claim(self, info, n):
        pq = self.pq

        async def go():
            async with pq.Queue(info["path"], durability="normal") as q:
                await h.fill(q, n + 1, type_="t", seed=13, priority=0)
                await q.complete((await q.claim("warm", limit=1))[0], None)  # warm-up
                times = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    (t,) = await q.claim("bench", limit=1)
                    await q.complete(t, None)
                    times.append(time.perf_counter() - t0)
                return h.median(times)

        try:
            return h.run(go)
        finally:
            conn = sqlite3.connect(info["path"], isolation_level=None, timeout=60)
            try:
                conn.execute(f'DELETE FROM "{info["table"]}" WHERE id > ?', (info["max_id"],))
            finally:
                conn.close()

    def track_claim_ratio(self, cache):
        n = h.size(1_000, 30)
        small, big = cache[str(DEPTHS[0])], cache[str(DEPTHS[-1])]
        ratios = []
        for _ in range(h.repeats()):
            ratios.append(self._median_claim(big, n) / self._median_claim(small, n))
        return h.median(ratios)

    track_claim_ratio.pretty_name = "Operations: claim+complete time at 1M rows / at 1k rows"
