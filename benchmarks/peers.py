"""Peers and the floor: the same enqueue / claim+acknowledge workload on other SQLite queues.

Every system runs on its own file in WAL mode at synchronous=NORMAL (this SQLite build
defaults to FULL, so each connection is set explicitly), with payloads of the same size,
in the same asv run, one after the other, repeated and interleaved.  The hand-written
sqlite3 queue is the floor: what plain SQLite does with no library around it, once with
one statement per transaction and once with 100 operations per transaction.

prismq_queue enqueues one task per ``await q.enqueue`` call and processes through its
``Worker`` (the path a user takes); its ratio to each peer is a track of its own, so the
dashboard shows where it stands and not only an absolute figure.

With ``PRISMQ_BENCH_PG`` set, pgqueuer (a PostgreSQL queue) and prismq_queue's
PostgreSQL backend run the same workload on that server (one process each: enqueue one
job per call, then drain), and the pgqueuer ratio compares the two on PostgreSQL.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time

from . import _helpers as h

# Pinned sizes: each system gets a workload that takes roughly 0.2-1 s per repeat here.
# persist-queue and litequeue scan their table on every claim, so their claim+ack cost
# grows with the table; they get smaller workloads, which flatters them, not us.
SIZES = {
    "sqlite3_single": h.size(10_000, 300),
    "sqlite3_batch100": h.size(50_000, 500),
    "huey": h.size(10_000, 300),
    "persist_queue": h.size(3_000, 200),
    "litequeue": h.size(2_000, 200),
    "prismq_queue": h.size(10_000, 300),
    "prismq_queue_api": h.size(3_000, 200),
    "pgqueuer": h.size(5_000, 200),
    "prismq_queue_pg": h.size(5_000, 200),
}
PEERS = ["sqlite3_single", "sqlite3_batch100", "huey", "persist_queue", "litequeue", "pgqueuer"]
# Which prismq_queue row each peer is compared with: like with like. The one-statement-
# per-transaction floor against prismq_queue's claim + complete API, one task per call;
# the batched floor and each peer library's own consumer against prismq_queue's Worker
# (huey, persist-queue and litequeue offer only one-at-a-time consumers); pgqueuer
# against prismq_queue on the same PostgreSQL server.
OURS = {"pgqueuer": "prismq_queue_pg", "sqlite3_single": "prismq_queue_api"}


def _payload(i: int) -> str:
    return json.dumps({"n": i, "k": (i * 2654435761) % (1 << 30)})


def _normal(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")


# ---------------------------------------------------------------- the floor: plain sqlite3
_FLOOR_DDL = """
CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL,
                                 status INTEGER NOT NULL DEFAULT 0, leased_at REAL);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (id) WHERE status = 0;
"""
_CLAIM_ONE = ("UPDATE jobs SET status = 1, leased_at = ? WHERE id = "
              "(SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT 1) RETURNING id, payload")
_CLAIM_MANY = ("UPDATE jobs SET status = 1, leased_at = ? WHERE id IN "
               "(SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT ?) RETURNING id, payload")


def _floor_conn(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    _normal(conn)
    conn.executescript(_FLOOR_DDL)
    return conn


def sqlite3_single(path: str, n: int) -> tuple[float, float]:
    conn = _floor_conn(path)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            conn.execute("INSERT INTO jobs (payload) VALUES (?)", (_payload(i),))
        t1 = time.perf_counter()
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(_CLAIM_ONE, (time.time(),)).fetchone()
            conn.execute("COMMIT")
            if row is None:
                break
            json.loads(row[1])
            conn.execute("UPDATE jobs SET status = 2 WHERE id = ?", (row[0],))
            done += 1
        t2 = time.perf_counter()
    finally:
        conn.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


def sqlite3_batch100(path: str, n: int) -> tuple[float, float]:
    conn = _floor_conn(path)
    try:
        t0 = time.perf_counter()
        for start in range(0, n, 100):
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO jobs (payload) VALUES (?)",
                             [(_payload(i),) for i in range(start, min(n, start + 100))])
            conn.execute("COMMIT")
        t1 = time.perf_counter()
        done = 0
        while True:
            conn.execute("BEGIN IMMEDIATE")
            rows = conn.execute(_CLAIM_MANY, (time.time(), 100)).fetchall()
            for r in rows:
                json.loads(r[1])
            conn.executemany("UPDATE jobs SET status = 2 WHERE id = ?", [(r[0],) for r in rows])
            conn.execute("COMMIT")
            if not rows:
                break
            done += len(rows)
        t2 = time.perf_counter()
    finally:
        conn.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


# ---------------------------------------------------------------- peer libraries
def huey(path: str, n: int) -> tuple[float, float]:
    from huey.storage import SqliteStorage

    st = SqliteStorage(name="bench", filename=path)
    st.conn.execute("PRAGMA synchronous=NORMAL")  # huey offers only OFF or FULL
    try:
        t0 = time.perf_counter()
        for i in range(n):
            st.enqueue(_payload(i).encode())
        t1 = time.perf_counter()
        done = 0
        while True:  # huey has no acknowledgement: a dequeue deletes the row
            data = st.dequeue()
            if data is None:
                break
            json.loads(bytes(data))
            done += 1
        t2 = time.perf_counter()
    finally:
        st.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


def persist_queue(path: str, n: int) -> tuple[float, float]:
    import os

    import persistqueue
    from persistqueue.serializers import json as pq_json

    q = persistqueue.SQLiteAckQueue(os.path.dirname(path), db_file_name=os.path.basename(path),
                                    serializer=pq_json, auto_commit=True)
    for conn in {id(q._putter): q._putter, id(q._getter): q._getter}.values():
        conn.execute("PRAGMA synchronous=NORMAL")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            q.put(_payload(i))
        t1 = time.perf_counter()
        done = 0
        while True:
            try:
                item = q.get(block=False, raw=True)
            except persistqueue.Empty:
                break
            json.loads(item["data"])
            q.ack(id=item["pqid"])
            done += 1
        t2 = time.perf_counter()
    finally:
        q.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


def litequeue(path: str, n: int) -> tuple[float, float]:
    from litequeue import LiteQueue

    q = LiteQueue(path)  # sets WAL and synchronous=NORMAL itself
    q.conn.execute("PRAGMA synchronous=NORMAL")
    try:
        t0 = time.perf_counter()
        for i in range(n):
            q.put(_payload(i))
        t1 = time.perf_counter()
        done = 0
        while True:
            m = q.pop()
            if m is None:
                break
            json.loads(m.data)
            q.done(m.message_id)
            done += 1
        t2 = time.perf_counter()
    finally:
        q.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


# ---------------------------------------------------------------- prismq_queue, same workload
DRAIN_FACTOR = 4  # prismq_queue drains 4x the tasks it enqueued one by one (see below)


def prismq_queue(path: str, n: int) -> tuple[float, float]:
    """Enqueue n tasks one per call (timed); then, so that the much faster drain also lasts
    long enough to measure, top the queue up to 4n with enqueue_many (not timed) and time
    a Worker draining all 4n: rates are per task either way."""
    pq = h.pq()

    async def go():
        q = pq.Queue(path, durability="normal")
        await q.open()
        try:
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("noop", {"n": i, "k": (i * 2654435761) % (1 << 30)})
            t1 = time.perf_counter()
            for start in range(n, DRAIN_FACTOR * n, 5000):
                await q.enqueue_many([("noop", {"n": i, "k": (i * 2654435761) % (1 << 30)})
                                      for i in range(start, min(DRAIN_FACTOR * n, start + 5000))])
            total = DRAIN_FACTOR * n
            done = 0

            def handler(task):
                nonlocal done
                done += 1

            async def ahandler(task):
                handler(task)

            w = pq.Worker(q, concurrency=50, lease_seconds=30)
            w.register("noop", ahandler)
            t2 = time.perf_counter()
            await w.run(until_empty=True)
            t3 = time.perf_counter()
        finally:
            await q.close()
        assert done == total, (done, total)
        return n / (t1 - t0), total / (t3 - t2)

    return h.run(go)


def prismq_queue_api(path: str, n: int) -> tuple[float, float]:
    """Enqueue n tasks one per call, then claim and complete them one per call through
    the API: the same shape as the one-statement-per-transaction floor."""
    pq = h.pq()

    async def go():
        async with pq.Queue(path, durability="normal") as q:
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("noop", {"n": i, "k": (i * 2654435761) % (1 << 30)})
            t1 = time.perf_counter()
            done = 0
            while True:
                tasks = await q.claim("api", limit=1)
                if not tasks:
                    break
                await q.complete(tasks[0], None)
                done += 1
            t2 = time.perf_counter()
        assert done == n, (done, n)
        return n / (t1 - t0), n / (t2 - t1)

    return h.run(go)


# ---------------------------------------------------------------- on PostgreSQL (PRISMQ_BENCH_PG)
def pgqueuer(path: str, n: int) -> tuple[float, float]:
    """pgqueuer on the PRISMQ_BENCH_PG server, in a schema of its own; drained in one process."""
    import os

    store = h.Store("postgresql", "pgq")
    try:
        import asyncpg
        from pgqueuer import AsyncpgDriver, PgQueuer, Queries
        from pgqueuer.domain.types import QueueExecutionMode
    except ImportError as exc:
        store.cleanup()
        raise NotImplementedError(f"pgqueuer not installed: {exc}")
    import datetime

    loc = store.location()
    schema = loc.rsplit("schema=", 1)[1]
    dsn = os.environ[h.PG_ENV].split("?")[0]

    async def go():
        admin = await asyncpg.connect(dsn)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        await admin.close()
        settings = {"search_path": schema}
        conn = await asyncpg.connect(dsn, server_settings=settings)
        q = Queries(AsyncpgDriver(conn))
        await q.install(create_schema=False)
        t0 = time.perf_counter()
        for i in range(n):
            await q.enqueue("noop", _payload(i).encode(), 0)
        t1 = time.perf_counter()
        await conn.close()
        pgq = PgQueuer(AsyncpgDriver(await asyncpg.connect(dsn, server_settings=settings)))
        done = 0
        first = last = None

        @pgq.entrypoint("noop")
        async def handler(job):
            nonlocal done, first, last
            now = time.perf_counter()
            first = first or now
            json.loads(job.payload)
            done += 1
            last = time.perf_counter()

        # pgqueuer's start-up (its listener, its queries) happens inside run(): the window
        # runs from the first job's handler to the last one's, so start-up and shutdown
        # stay outside it; the first job's own dequeue is not counted (n - 1 tasks).
        await pgq.run(mode=QueueExecutionMode.drain, batch_size=PGQUEUER_BATCH,
                      dequeue_timeout=datetime.timedelta(seconds=1))
        assert done == n, (done, n)
        return n / (t1 - t0), (n - 1) / (last - first)

    try:
        return h.run(go)
    finally:
        store.cleanup()


def prismq_queue_pg(path: str, n: int) -> tuple[float, float]:
    """prismq_queue on the PRISMQ_BENCH_PG server: the same workload as prismq_queue."""
    store = h.Store("postgresql", "pqpg")
    try:
        return prismq_queue(store.location(), n)
    finally:
        store.cleanup()


PGQUEUER_BATCH = 10

SYSTEMS = {f.__name__: f for f in (sqlite3_single, sqlite3_batch100, huey, persist_queue, litequeue,
                                   prismq_queue, prismq_queue_api, pgqueuer, prismq_queue_pg)}


def measure_all(systems=None, repeats: int | None = None) -> dict:
    """{system: {"enqueue": rate, "claim_ack": rate}} medians over repeats, systems interleaved."""
    systems = list(systems or SYSTEMS)
    repeats = repeats or h.repeats()
    samples = {s: {"enqueue": [], "claim_ack": []} for s in systems}
    errors = {}
    tmp = h.TempDir()
    try:
        for r in range(repeats + 1):  # round 0 is a warm-up (imports, page cache)
            for s in systems:
                if s in errors:
                    continue
                path = tmp.file(f"{s}-{r}.db")  # (the PostgreSQL systems make schemas instead)
                try:
                    enq, cyc = SYSTEMS[s](path, SIZES[s] if r else max(50, SIZES[s] // 10))
                except (NotImplementedError, ImportError) as exc:  # peer library not installed
                    errors[s] = ("skip", f"{type(exc).__name__}: {exc}")
                    continue
                except Exception as exc:  # noqa: BLE001 - one system's failure fails its figures only
                    errors[s] = ("error", f"{type(exc).__name__}: {exc}")
                    continue
                finally:
                    h.remove_db(path)
                if r:
                    samples[s]["enqueue"].append(enq)
                    samples[s]["claim_ack"].append(cyc)
    finally:
        tmp.cleanup()
    out = {}
    for s in systems:
        if s in errors:
            out[s] = {"error": errors[s]}
        else:
            out[s] = {k: h.median(v) for k, v in samples[s].items()}
    return out


_LABEL = {
    "sqlite3_single": "hand-written sqlite3, 1 statement/txn",
    "sqlite3_batch100": "hand-written sqlite3, 100 per txn (floor)",
    "huey": "huey SqliteStorage",
    "persist_queue": "persist-queue SQLiteAckQueue",
    "litequeue": "litequeue",
    "prismq_queue": "prismq_queue Worker, batches of up to 50 (drains 4x what it enqueues)",
    "prismq_queue_api": "prismq_queue claim + complete, 1 per call",
    "pgqueuer": f"pgqueuer, batch_size={PGQUEUER_BATCH} (PostgreSQL)",
    "prismq_queue_pg": "prismq_queue Worker, batches of up to 50 (PostgreSQL; drains 4x what it enqueues)",
}


def _check(entry: dict, system: str) -> None:
    """Skip (library missing) or fail (it failed) the figures of one system only."""
    if entry is None:
        raise NotImplementedError(f"{system} not measured")
    if "error" in entry:
        kind, msg = entry["error"]
        if kind == "skip":
            raise NotImplementedError(f"{system} not measurable here: {msg}")
        raise RuntimeError(f"{system} failed: {msg}")
_OP = {"enqueue": "enqueue", "claim_ack": "claim+ack"}


class _PeerRun:
    """One measurement of every system, shared by both classes below."""

    timeout = 600

    def setup(self, *params):
        self.cache = h.shared("peers", measure_all)


class PeerRates(_PeerRun):
    """Absolute rates of every system on the shared workload (tasks/s, higher is better)."""

    params = [list(SYSTEMS), ["enqueue", "claim_ack"]]
    param_names = ["system", "op"]
    unit = "tasks/s"
    # 3: prismq_queue_api row; pgqueuer timed from its first handler to its last (its
    #    start-up was inside the window); one system's failure fails only its figures
    version = 3

    def setup(self, system, op):
        super().setup()
        if self.cache.get(system) is None or self.cache[system].get("error", (None,))[0] == "skip":
            _check(self.cache.get(system), system)  # skipped in setup: a missing library

    def track_rate(self, system, op):
        _check(self.cache[system], system)  # a failure: this figure fails, the others stand
        return self.cache[system][op]

    track_rate.pretty_name = "Peers: tasks/s per system and operation (WAL, synchronous=NORMAL)"


class PrismqRatio(_PeerRun):
    """prismq_queue's rate divided by each peer's, same run (>1 means prismq_queue is faster)."""

    params = [PEERS, ["enqueue", "claim_ack"]]
    param_names = ["peer", "op"]
    unit = "ratio"
    # 3: against sqlite3_single, prismq_queue's claim + complete API (was its Worker)
    version = 3

    def setup(self, peer, op):
        super().setup()
        for system in (peer, OURS.get(peer, "prismq_queue")):
            entry = self.cache.get(system)
            if entry is None or entry.get("error", (None,))[0] == "skip":
                _check(entry, system)

    def track_ratio(self, peer, op):
        ours = OURS.get(peer, "prismq_queue")
        _check(self.cache[ours], ours)
        _check(self.cache[peer], peer)
        return self.cache[ours][op] / self.cache[peer][op]

    track_ratio.pretty_name = "Peers: prismq_queue rate / peer rate"
