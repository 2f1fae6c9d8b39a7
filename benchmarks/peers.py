"""Peers and the floor: the same enqueue / claim+acknowledge workload on other SQLite queues.

Every system runs on its own file in WAL mode at synchronous=NORMAL (this SQLite build
defaults to FULL, so each connection is set explicitly), with payloads of the same size,
in the same asv run, one after the other, repeated and interleaved.  The hand-written
sqlite3 queue is the floor: what plain SQLite does with no library around it, once with
one statement per transaction and once with 100 operations per transaction.

Each synchronous system is one small adapter (``put``, ``take``, ``ack``, ``flush``,
``close``) and ``timed`` is the one body that owns the clock for all of them. prismq_queue
enqueues one task per ``await q.enqueue`` call and processes either through its ``Worker``
(the path a user takes) or through ``claim`` + ``complete`` one per call
(``prismq_queue_api``); its ratio to each peer is a track of its own.

With ``PRISMQ_BENCH_PG`` set, pgqueuer (a PostgreSQL queue) and prismq_queue's
PostgreSQL backend run the same workload on that server (one process each: enqueue one
job per call, then drain), and the pgqueuer ratio compares the two on PostgreSQL.
"""

from __future__ import annotations

import json
import sqlite3
import time

from . import _helpers as h

# Pinned sizes: each system gets a workload whose enqueue and whose claim+ack each take
# roughly 0.15-0.6 s per repeat here (on an idle machine; about twice that under load).
# persist-queue and litequeue scan their table on every claim, so their claim+ack cost
# grows with the table; they get smaller workloads, which flatters them, not us. Each
# enqueue on PostgreSQL is a round trip to the server (about 1 ms here), so the two
# PostgreSQL systems get 2,000: 5,000 took 4-8 s per repeat, 40 s of a run. The fast
# SQLite systems get 6,000 (the floor in batches 30,000): 10,000 (50,000) took 0.3-0.5 s
# per operation, and prismq_queue's drain of 4 x 10,000 about 1.1 s: longer than a rate needs.
SIZES = {
    "sqlite3_single": h.size(6_000, 300),
    "sqlite3_batch100": h.size(30_000, 500),
    "huey": h.size(6_000, 300),
    "persist_queue": h.size(3_000, 200),
    "litequeue": h.size(2_000, 200),
    "prismq_queue": h.size(6_000, 300),
    "prismq_queue_api": h.size(3_000, 200),
    "pgqueuer": h.size(2_000, 200),
    "prismq_queue_pg": h.size(2_000, 200),
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


# ---------------------------------------------------------------- one adapter per synchronous system
class Sqlite3Single:
    """The floor, one statement per transaction: insert; claim one (UPDATE ... RETURNING); ack."""

    def __init__(self, path: str):
        self.conn = _floor_conn(path)

    def put(self, payload: str) -> None:
        self.conn.execute("INSERT INTO jobs (payload) VALUES (?)", (payload,))

    def take(self):
        self.conn.execute("BEGIN IMMEDIATE")
        row = self.conn.execute(_CLAIM_ONE, (time.time(),)).fetchone()
        self.conn.execute("COMMIT")
        return row

    def ack(self, key) -> None:
        self.conn.execute("UPDATE jobs SET status = 2 WHERE id = ?", (key,))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.conn.close()


class Sqlite3Batch100(Sqlite3Single):
    """The floor, 100 operations per transaction: inserts in batches of 100; each claim
    transaction acknowledges the previous batch and claims the next 100."""

    BATCH = 100

    def __init__(self, path: str):
        super().__init__(path)
        self.puts: list = []
        self.claimed: list = []
        self.acks: list = []

    def put(self, payload: str) -> None:
        self.puts.append((payload,))
        if len(self.puts) == self.BATCH:
            self._insert()

    def _insert(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany("INSERT INTO jobs (payload) VALUES (?)", self.puts)
        self.conn.execute("COMMIT")
        self.puts = []

    def take(self):
        if not self.claimed:
            self.conn.execute("BEGIN IMMEDIATE")
            self._ack()
            self.claimed = self.conn.execute(_CLAIM_MANY, (time.time(), self.BATCH)).fetchall()[::-1]
            self.conn.execute("COMMIT")
        return self.claimed.pop() if self.claimed else None

    def ack(self, key) -> None:
        self.acks.append((key,))

    def _ack(self) -> None:
        if self.acks:
            self.conn.executemany("UPDATE jobs SET status = 2 WHERE id = ?", self.acks)
            self.acks = []

    def flush(self) -> None:
        if self.puts:
            self._insert()
        if self.acks:
            self.conn.execute("BEGIN IMMEDIATE")
            self._ack()
            self.conn.execute("COMMIT")


class Huey:
    """huey's SqliteStorage: a dequeue deletes the row, so there is no acknowledgement step."""

    def __init__(self, path: str):
        from huey.storage import SqliteStorage

        self.st = SqliteStorage(name="bench", filename=path)
        self.st.conn.execute("PRAGMA synchronous=NORMAL")  # huey offers only OFF or FULL

    def put(self, payload: str) -> None:
        self.st.enqueue(payload.encode())

    def take(self):
        data = self.st.dequeue()
        return None if data is None else (None, bytes(data))

    def ack(self, key) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.st.close()


class PersistQueue:
    """persist-queue's SQLiteAckQueue: get, then ack by id."""

    def __init__(self, path: str):
        import os

        import persistqueue
        from persistqueue.serializers import json as pq_json

        self.empty = persistqueue.Empty
        self.q = persistqueue.SQLiteAckQueue(os.path.dirname(path), db_file_name=os.path.basename(path),
                                             serializer=pq_json, auto_commit=True)
        for conn in {id(self.q._putter): self.q._putter, id(self.q._getter): self.q._getter}.values():
            conn.execute("PRAGMA synchronous=NORMAL")

    def put(self, payload: str) -> None:
        self.q.put(payload)

    def take(self):
        try:
            item = self.q.get(block=False, raw=True)
        except self.empty:
            return None
        return item["pqid"], item["data"]

    def ack(self, key) -> None:
        self.q.ack(id=key)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.q.close()


class LiteQueueAdapter:
    """litequeue: pop, then done by message id."""

    def __init__(self, path: str):
        from litequeue import LiteQueue

        self.q = LiteQueue(path)  # sets WAL and synchronous=NORMAL itself
        self.q.conn.execute("PRAGMA synchronous=NORMAL")

    def put(self, payload: str) -> None:
        self.q.put(payload)

    def take(self):
        m = self.q.pop()
        return None if m is None else (m.message_id, m.data)

    def ack(self, key) -> None:
        self.q.done(key)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.q.close()


def timed(adapter, path: str, n: int) -> tuple[float, float]:
    """The one timed body of every synchronous system: put n payloads, then take, decode and
    acknowledge until empty; returns (enqueue, claim+ack) tasks/s. Opening and closing
    the system stay outside both windows."""
    a = adapter(path)
    try:
        t0 = time.perf_counter()
        for i in range(n):
            a.put(_payload(i))
        a.flush()
        t1 = time.perf_counter()
        done = 0
        while True:
            got = a.take()
            if got is None:
                break
            key, data = got
            json.loads(data)
            a.ack(key)
            done += 1
        a.flush()
        t2 = time.perf_counter()
    finally:
        a.close()
    assert done == n, (done, n)
    return n / (t1 - t0), n / (t2 - t1)


def sqlite3_single(path: str, n: int) -> tuple[float, float]:
    return timed(Sqlite3Single, path, n)


def sqlite3_batch100(path: str, n: int) -> tuple[float, float]:
    return timed(Sqlite3Batch100, path, n)


def huey(path: str, n: int) -> tuple[float, float]:
    return timed(Huey, path, n)


def persist_queue(path: str, n: int) -> tuple[float, float]:
    return timed(PersistQueue, path, n)


def litequeue(path: str, n: int) -> tuple[float, float]:
    return timed(LiteQueueAdapter, path, n)


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
    #    start-up was inside the window); one system's failure fails only its figures;
    #    the synchronous systems through one timed body (the batched floor acknowledges a
    #    batch in the transaction that claims the next)
    # 4: pgqueuer and prismq_queue_pg on 2,000 tasks (was 5,000)
    # 5: sqlite3_single, huey and prismq_queue on 6,000 (was 10,000), sqlite3_batch100 on 30,000 (was 50,000)
    version = 5

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
    # 4: pgqueuer and prismq_queue_pg on 2,000 tasks (was 5,000)
    # 5: sqlite3_single, huey and prismq_queue on 6,000 (was 10,000), sqlite3_batch100 on 30,000 (was 50,000)
    version = 5

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
