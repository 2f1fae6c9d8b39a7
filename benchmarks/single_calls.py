"""Single calls: one enqueue, claim, complete, get or cancel per await, beside plain sqlite3.

What a web request does: one call at a time, each awaited. The figure that matters is
the ratio to what plain ``sqlite3`` does with the same statements, measured in the same
run, interleaved, so that the load on the machine falls on both sides:

* ``enqueue``: ``await q.enqueue`` per task, against one ``INSERT`` per transaction;
* ``claim_complete``: ``await q.claim`` then ``await q.complete`` per task, against a
  ``BEGIN IMMEDIATE`` claim (``UPDATE ... RETURNING``) and an acknowledging ``UPDATE``;
* ``get`` and ``cancel``: one call per task, against one ``SELECT`` / ``UPDATE``.

Every file is in WAL mode at ``synchronous=NORMAL`` (``durability="normal"``).

``DrainRatio``: a Worker draining no-op tasks against the raw claim+ack loop above.

``EnqueueIdleVsLoaded``: single enqueues with every core kept busy by spinning
processes, against the same on the idle machine, interleaved in one run.

``LoopLag``: the event loop must never wait for the queue, even while another process
holds SQLite's write lock. A coroutine ticks every 1 ms and notes how late each tick is,
while single calls go on (an enqueue every 2 ms, not awaited one by one, and a ``get``)
and another process holds the write lock for 2 s. Reported: the worst and the 99th
percentile lateness, and the same for the ticker alone in the same run (the machine's
own floor: the bare machine is late by a few ms at worst).

This module stands alone (no ``_helpers``), so it reads the same on every commit.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

SMOKE = os.environ.get("PRISMQ_BENCH_SMOKE", "") not in ("", "0")
N = 300 if SMOKE else 4000  # tasks per measured repeat, per system
REPEATS = 1 if SMOKE else 5  # medians over this many, systems interleaved
HOLD = 0.3 if SMOKE else 2.0  # seconds the other process holds the write lock
OPS = ["enqueue", "claim_complete", "get", "cancel"]


def _pq():
    try:
        import prismq_queue
    except ImportError as exc:
        raise NotImplementedError(f"prismq_queue not importable: {exc}")
    return prismq_queue


def _median(values):
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def _percentile(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def _payload(i: int) -> dict:
    return {"n": i, "k": (i * 2654435761) % (1 << 30)}


def _run(coro):
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


# ---------------------------------------------------------------- plain sqlite3, the same statements
_RAW_DDL = """
CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY, payload TEXT NOT NULL,
                                 status INTEGER NOT NULL DEFAULT 0, leased_at REAL);
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (id) WHERE status = 0;
"""
_RAW_CLAIM = ("UPDATE jobs SET status = 1, leased_at = ? WHERE id = "
              "(SELECT id FROM jobs WHERE status = 0 ORDER BY id LIMIT 1) RETURNING id, payload")


def _raw_connection(path: str) -> sqlite3.Connection:
    """The hand-written queue's connection: WAL, synchronous=NORMAL, its table created."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL").fetchall()
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_RAW_DDL)
    return conn


def _raw_inserts(conn: sqlite3.Connection, n: int) -> None:
    """n single-row inserts, one transaction each: the raw loop every enqueue ratio divides by."""
    for i in range(n):
        conn.execute("INSERT INTO jobs (payload) VALUES (?)", (json.dumps(_payload(i)),))


def raw_sqlite3(path: str, n: int) -> dict:
    """Seconds per operation of each op, one statement (or claim transaction) at a time."""
    conn = _raw_connection(path)
    try:
        t0 = time.perf_counter()
        _raw_inserts(conn, n)
        t1 = time.perf_counter()
        for _ in range(n):
            conn.execute("BEGIN IMMEDIATE")
            task_id, payload = conn.execute(_RAW_CLAIM, (time.time(),)).fetchone()
            conn.execute("COMMIT")
            json.loads(payload)
            conn.execute("UPDATE jobs SET status = 2 WHERE id = ? AND status = 1", (task_id,))
        t2 = time.perf_counter()
        for i in range(1, n + 1):
            conn.execute("SELECT id, payload, status, leased_at FROM jobs WHERE id = ?", (i,)).fetchone()
        t3 = time.perf_counter()
        for i in range(1, n + 1):
            conn.execute("UPDATE jobs SET status = 3 WHERE id = ? AND status IN (0, 1)", (i,))
        t4 = time.perf_counter()
    finally:
        conn.close()
    return {"enqueue": (t1 - t0) / n, "claim_complete": (t2 - t1) / n, "get": (t3 - t2) / n,
            "cancel": (t4 - t3) / n}


def prismq(path: str, n: int) -> dict:
    """Seconds per operation through the public API, one awaited call at a time."""
    pq = _pq()

    async def go():
        async with pq.Queue(path, durability="normal") as q:
            t0 = time.perf_counter()
            ids = [await q.enqueue("noop", _payload(i)) for i in range(n)]
            t1 = time.perf_counter()
            for _ in range(n):
                (task,) = await q.claim("bench")
                await q.complete(task, None)
            t2 = time.perf_counter()
            for task_id in ids:
                await q.get(task_id)
            t3 = time.perf_counter()
            for task_id in ids:
                await q.cancel(task_id)  # finished already: the call is made, nothing changes
            t4 = time.perf_counter()
        return {"enqueue": (t1 - t0) / n, "claim_complete": (t2 - t1) / n, "get": (t3 - t2) / n,
                "cancel": (t4 - t3) / n, "drain": await _drain(pq, path + "-drain", n)}

    return _run(go())


async def _drain(pq, path: str, n: int):
    """Seconds per task of one Worker draining n no-op tasks (enqueued in one batch first); None if unsupported."""
    import inspect

    if not hasattr(pq, "Worker") or not hasattr(pq.Queue, "enqueue_many") \
            or "until_empty" not in inspect.signature(pq.Worker.run).parameters:
        return None

    async def noop(task):
        return None

    async with pq.Queue(path, durability="normal") as q:
        await q.enqueue_many([("noop", _payload(i)) for i in range(n)])
        kwargs = {"handle_signals": False} if "handle_signals" in inspect.signature(pq.Worker).parameters else {}
        w = pq.Worker(q, concurrency=50, **kwargs)
        w.register("noop", noop)
        t0 = time.perf_counter()
        await w.run(until_empty=True)
        return (time.perf_counter() - t0) / n


SYSTEMS = {"sqlite3": raw_sqlite3, "prismq_queue": prismq}


def measure(n: int = N, repeats: int = REPEATS) -> dict:
    """{system: {op: median seconds per op}}, the systems interleaved; round 0 warms up."""
    samples = {s: {op: [] for op in OPS} for s in SYSTEMS}
    tmp = tempfile.mkdtemp(prefix="prismq-bench-single-")
    try:
        for r in range(repeats + 1):
            for name, fn in SYSTEMS.items():
                path = os.path.join(tmp, f"{name}-{r}.db")
                result = fn(path, n if r else max(50, n // 10))
                if r:
                    for op in OPS:
                        samples[name][op].append(result[op])
                    if result.get("drain") is not None:
                        samples[name].setdefault("drain", []).append(result["drain"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {s: {op: _median(v) for op, v in ops.items()} for s, ops in samples.items()}


def _unavailable(why: str) -> dict:
    """What setup_cache returns when it cannot measure: asv passes no cache argument at all for None."""
    return {"unavailable": why}


def _skip_if_unavailable(cache) -> None:
    if "unavailable" in cache:
        raise NotImplementedError(cache["unavailable"])


def _available() -> bool:
    try:
        pq = _pq()
    except NotImplementedError:
        return False
    return all(hasattr(pq.Queue, name) for name in ("enqueue", "claim", "complete", "get", "cancel"))


class _SingleCallRun:
    """One measurement shared by the classes below (asv keys setup_cache by where it is defined)."""

    timeout = 600
    version = 1

    def setup_cache(self):
        return measure() if _available() else _unavailable("this prismq_queue lacks a single-call API")

    def setup(self, cache, *params):
        _skip_if_unavailable(cache)


class SingleCalls(_SingleCallRun):
    """Microseconds per single call, prismq_queue and plain sqlite3 in one run (lower is better)."""

    params = [list(SYSTEMS), OPS]
    param_names = ["system", "op"]
    unit = "us/op"

    def track_us_per_op(self, cache, system, op):
        return cache[system][op] * 1e6

    track_us_per_op.pretty_name = "Single calls: us per call (WAL, NORMAL), prismq_queue and plain sqlite3"


class SingleCallRatio(_SingleCallRun):
    """prismq_queue's rate of single calls / plain sqlite3's, same run (1.0 = as fast as no library)."""

    params = [OPS]
    param_names = ["op"]
    unit = "ratio"

    def track_ratio(self, cache, op):
        return cache["sqlite3"][op] / cache["prismq_queue"][op]

    track_ratio.pretty_name = "Single calls: prismq_queue rate / plain sqlite3 rate"


class DrainRatio(_SingleCallRun):
    """A Worker's drain rate (no-op tasks, concurrency 50) / plain sqlite3's claim+ack loop, same run.

    The raw loop is ``claim_complete`` above: one claim transaction and one
    acknowledging UPDATE per task, the per-task loop a hand-written queue runs.
    The Worker batches claims and acknowledgements; the target is 2.2x.
    """

    unit = "ratio"

    def setup(self, cache, *params):
        super().setup(cache, *params)
        if "drain" not in cache["prismq_queue"]:
            raise NotImplementedError("this prismq_queue's Worker cannot drain a queue (run(until_empty=True))")

    def track_ratio(self, cache):
        return cache["sqlite3"]["claim_complete"] / cache["prismq_queue"]["drain"]

    track_ratio.pretty_name = "Worker drain rate / plain sqlite3 claim+ack loop rate"

    def track_tasks_per_s(self, cache):
        return 1.0 / cache["prismq_queue"]["drain"]

    track_tasks_per_s.unit = "tasks/s"


# ---------------------------------------------------------------- enqueue on an idle and a loaded machine
# Spinning processes that keep every core this process may run on busy. They run at
# the lowest priority (nice 19): no core is ever idle, so a call that waits for
# another thread or process finds its CPU busy, as on a loaded server, yet they do
# not take the measured process's own share of a core. At the default priority they
# took it, and the figure measured CPU starvation that any code shows (plain sqlite3
# beside it lost as much), not the call's dependence on the machine's idleness.
BUSY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
_SPIN = "import os\nos.nice(19)\nwhile True:\n    pass\n"


def _raw_enqueue(path: str, n: int) -> float:
    conn = _raw_connection(path)
    try:
        t0 = time.perf_counter()
        _raw_inserts(conn, n)
        return (time.perf_counter() - t0) / n
    finally:
        conn.close()


def _pq_enqueue(path: str, n: int) -> float:
    pq = _pq()

    async def go():
        async with pq.Queue(path, durability="normal") as q:
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("noop", _payload(i))
            return (time.perf_counter() - t0) / n

    return _run(go())


def measure_load(n: int = N, repeats: int = REPEATS) -> dict:
    """{system: {"idle"|"loaded": median seconds per enqueue}}: idle and loaded rounds interleaved."""
    samples = {s: {"idle": [], "loaded": []} for s in ("sqlite3", "prismq_queue")}
    tmp = tempfile.mkdtemp(prefix="prismq-bench-load-")
    try:
        for r in range(repeats + 1):
            for load in ("idle", "loaded"):
                spinners = ([subprocess.Popen([sys.executable, "-c", _SPIN]) for _ in range(BUSY)]
                            if load == "loaded" else [])
                try:
                    if spinners:
                        time.sleep(0.2)  # let them start spinning
                    k = n if r else max(50, n // 10)
                    raw = _raw_enqueue(os.path.join(tmp, f"raw-{r}-{load}.db"), k)
                    mine = _pq_enqueue(os.path.join(tmp, f"pq-{r}-{load}.db"), k)
                finally:
                    for p in spinners:
                        p.kill()
                    for p in spinners:
                        p.wait()
                if r:
                    samples["sqlite3"][load].append(raw)
                    samples["prismq_queue"][load].append(mine)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {s: {k: _median(v) for k, v in loads.items()} for s, loads in samples.items()}


class EnqueueIdleVsLoaded:
    """Single enqueues/s with every core kept busy by other processes / on the idle machine, same run.

    1.0: the machine's load does not change the rate. The target is within 1.5x
    either way for prismq_queue; plain sqlite3 beside it shows the machine's own
    effect (with the load at the lowest priority, it should stay near 1.0). A
    bridge that pays cross-thread wake-ups of idle CPUs gets *faster* when the
    machine is loaded (issue 12 measured ~2x); one that waits for a thread that
    must be scheduled on a busy core gets slower.
    """

    params = [["prismq_queue", "sqlite3"]]
    param_names = ["system"]
    unit = "ratio"
    timeout = 600
    # 2: the spinners run at nice 19 (see _SPIN): at the default priority they took
    # a third or more of the measured process's CPU, and the raw sqlite3 loop fell to
    # 0.43x as prismq_queue fell to 0.30x: CPU starvation, not what issue 12 names.
    version = 2

    def setup_cache(self):
        return measure_load() if _available() else _unavailable("this prismq_queue lacks a single-call API")

    def setup(self, cache, system):
        _skip_if_unavailable(cache)

    def track_loaded_over_idle(self, cache, system):
        return cache[system]["idle"] / cache[system]["loaded"]

    track_loaded_over_idle.pretty_name = "Single enqueues: rate on a loaded machine / rate on an idle one"


# ---------------------------------------------------------------- the event loop while a lock is held
_HOLDER = r"""
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
conn.close()
"""


async def _ticker(lateness: list, stop: asyncio.Event, period: float = 0.001) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + period
        await asyncio.sleep(period)
        lateness.append(max(0.0, loop.time() - due))


async def _bare(seconds: float) -> list:
    lateness: list = []
    stop = asyncio.Event()
    ticker = asyncio.ensure_future(_ticker(lateness, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await ticker
    return lateness


async def _under_lock(path: str, hold: float) -> tuple[list, int]:
    """Ticker lateness while single calls go on and another process holds the write lock for `hold` s."""
    pq = _pq()
    async with pq.Queue(path, durability="normal") as q:
        first = await q.enqueue("noop", _payload(0))
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, path, str(hold)], stdout=subprocess.PIPE,
                                  text=True)
        try:
            loop = asyncio.get_running_loop()
            line = await loop.run_in_executor(None, holder.stdout.readline)
            if line.strip() != "locked":
                raise RuntimeError(f"the lock holder did not start: {line!r}")
            lateness: list = []
            stop = asyncio.Event()
            ticker = asyncio.ensure_future(_ticker(lateness, stop))
            calls = []
            end = loop.time() + hold + 0.5  # the whole hold, then half a second of catching up
            i = 0
            while loop.time() < end:
                calls.append(asyncio.ensure_future(q.enqueue("noop", _payload(i))))
                await q.get(first)  # a read: never waits for the lock in WAL mode
                await asyncio.sleep(0.002)
                i += 1
            await asyncio.gather(*calls)
            stop.set()
            await ticker
        finally:
            holder.wait(timeout=60)
    return lateness, len(calls)


def measure_lag(hold: float = HOLD) -> dict:
    tmp = tempfile.mkdtemp(prefix="prismq-bench-lag-")
    try:
        bare = _run(_bare(hold))
        busy, calls = _run(_under_lock(os.path.join(tmp, "q.db"), hold))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ms = 1000.0
    return {"queue": {"max": max(busy) * ms, "p99": _percentile(busy, 99) * ms},
            "bare": {"max": max(bare) * ms, "p99": _percentile(bare, 99) * ms}, "calls": calls}


class LoopLag:
    """Lateness of a 1 ms ticker (ms): single calls while another process holds the write lock 2 s."""

    params = [["queue", "bare"], ["max", "p99"]]
    param_names = ["loop", "stat"]
    unit = "ms"
    timeout = 300
    version = 1

    def setup_cache(self):
        return measure_lag() if _available() else _unavailable("this prismq_queue lacks a single-call API")

    def setup(self, cache, loop, stat):
        _skip_if_unavailable(cache)

    def track_lateness(self, cache, loop, stat):
        return cache[loop][stat]

    track_lateness.pretty_name = "Loop lag: 1 ms ticker lateness, write lock held by another process"


# ---------------------------------------------------------------- PostgreSQL: idle workers and inserts
PG_ENV = "PRISMQ_BENCH_PG"
IDLE_WORKERS = 4
PG_N = 100 if SMOKE else 1500  # single enqueues per measured repeat

_IDLE_WORKER = r"""
import asyncio, sys
from prismq_queue import Queue, Worker
async def main():
    async with Queue(sys.argv[1]) as q:
        w = Worker(q, concurrency=50, poll_interval=30)
        w.register("noop", lambda task: None)
        run = asyncio.ensure_future(w.run())
        await asyncio.sleep(0.3)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        w.stop()
        await run
asyncio.run(main())
"""


def _pg_location(tag: str) -> str:
    url = os.environ[PG_ENV]
    return f"{url}{'&' if '?' in url else '?'}schema=prismq_bench_{tag}_{os.getpid()}"


async def _listener_sessions(since: float) -> int:
    """Sessions opened since `since` (epoch seconds) by Queues for their idle workers' wake-ups."""
    import asyncpg

    conn = await asyncpg.connect(os.environ[PG_ENV].split("?")[0])
    try:
        return await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                                   "'prismq_queue listener' AND backend_start >= to_timestamp($1)", since)
    finally:
        await conn.close()


def _until_listening(workers: int, since: float, seconds: float = 60.0) -> None:
    """Wait until every idle worker's Queue has its wake-up session: they wait for work, not start up."""
    deadline = time.monotonic() + seconds
    while _run(_listener_sessions(since)) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {workers} idle workers did not all open their LISTEN session")
        time.sleep(0.05)
    time.sleep(0.2)  # let the last one settle into its wait (LISTEN, or the wait for the watch)


async def _drop_schema(location: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(os.environ[PG_ENV].split("?")[0])
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{location.rsplit("schema=", 1)[1]}" CASCADE')
    finally:
        await conn.close()


def _pg_enqueue_rate(location: str, idle_workers: int, n: int) -> float:
    """Single enqueues/s of one producer while `idle_workers` processes each run an idle Worker."""
    pq = _pq()

    async def enqueue():
        async with pq.Queue(location) as q:
            t0 = time.perf_counter()
            for i in range(n):
                await q.enqueue("noop", _payload(i))
            return n / (time.perf_counter() - t0)

    _run(pq.Queue(location).open())  # create the schema before the workers race to
    since = time.time() - 1.0  # (the server's clock is this machine's; a second of slack for rounding)
    kids = [subprocess.Popen([sys.executable, "-c", _IDLE_WORKER, location], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True) for _ in range(idle_workers)]
    try:
        for kid in kids:
            if kid.stdout.readline().strip() != "ready":
                raise RuntimeError("an idle worker did not start")
        if idle_workers:
            _until_listening(idle_workers, since)
        return _run(enqueue())
    finally:
        for kid in kids:
            try:
                kid.stdin.write("\n")
                kid.stdin.flush()
            except OSError:
                pass
        for kid in kids:
            kid.wait(timeout=60)


def measure_pg_wake(repeats: int = REPEATS) -> dict:
    """Medians of single enqueues/s with no idle worker ("none"), one ("one") and IDLE_WORKERS ("idle").

    The sides take turns going first, so a drift of the machine's load over the run
    does not favour one of them.
    """
    rates: dict = {"none": [], "one": [], "idle": []}
    sides = [("none", 0), ("one", 1), ("idle", IDLE_WORKERS)]
    for r in range(1 if SMOKE else 0, repeats + 1):  # round 0 warms up (not under smoke: 10 process starts)
        for key, workers in sides[r % 3:] + sides[:r % 3]:
            location = _pg_location(f"wake{r}{key}")
            try:
                rate = _pg_enqueue_rate(location, workers, PG_N if r else max(20, PG_N // 10))
            finally:
                _run(_drop_schema(location))
            if r:
                rates[key].append(rate)
    return {k: _median(v) for k, v in rates.items()}


class IdleWorkersPg:
    """PostgreSQL: single enqueues/s with 4 idle Worker processes / with none (1.0: they cost nothing).

    The four workers, each in its own process on the same queue, wait for work when the
    producer starts (each has opened its wake-up session); then they take the tasks, as
    an idle pool does. So the figure holds the cost of running the tasks (a claim and an
    acknowledgement each, on the same server and, here, the same cores) besides that of
    waking workers in vain. The target is 0.8x (issue 12). ``track_ratio_to_one_worker``
    sets the four against one idle worker, which runs the same tasks and can wake no
    other: the cost of the herd alone (1.0: extra idle workers cost nothing).
    """

    params = [["postgresql"]]
    param_names = ["backend"]
    unit = "ratio"
    timeout = 600
    # 2: the producer starts once every worker has its wake-up session (a fixed 0.3 s
    # sleep did not make sure they were waiting, on a loaded machine); the sides take
    # turns going first; a side with one idle worker.
    version = 2

    def setup_cache(self):
        unavailable = _unavailable(f"needs {PG_ENV} (a PostgreSQL server) and asyncpg")
        if not os.environ.get(PG_ENV) or not _available():
            return unavailable
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            return unavailable
        return measure_pg_wake()

    def setup(self, cache, backend):
        _skip_if_unavailable(cache)

    def track_ratio(self, cache, backend):
        return cache["idle"] / cache["none"]

    track_ratio.pretty_name = "PostgreSQL: enqueue rate with 4 idle workers / with none"

    def track_ratio_to_one_worker(self, cache, backend):
        return cache["idle"] / cache["one"]

    track_ratio_to_one_worker.pretty_name = "PostgreSQL: enqueue rate with 4 idle workers / with 1"

    def track_rate_with_idle_workers(self, cache, backend):
        return cache["idle"]

    track_rate_with_idle_workers.unit = "tasks/s"
