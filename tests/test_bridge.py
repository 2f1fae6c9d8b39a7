"""The bridge between the event loop and the SQLite connection (prismq_queue/backends/sqlite_bridge.py)."""

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from prismq_queue import Queue, Worker
from prismq_queue.backends.sqlite_bridge import SQLiteBridge


def _connector(path):
    return lambda: sqlite3.connect(path, isolation_level=None, timeout=0, check_same_thread=False)


async def test_bridge_runs_functions_in_order_on_its_own_thread(db_path):
    bridge = SQLiteBridge(_connector(db_path))
    conn = await bridge.open()
    try:
        loop_thread = threading.get_ident()
        seen = []

        def step(i):
            seen.append((i, threading.get_ident()))
            return i * 2

        # Made all at once, answered in the order made, none on the loop's thread.
        results = await asyncio.gather(*(bridge.run(step, i) for i in range(50)))
        assert results == [i * 2 for i in range(50)]
        assert [i for i, _ in seen] == list(range(50))
        threads = {t for _, t in seen}
        assert len(threads) == 1 and loop_thread not in threads
        assert await bridge.run(lambda: conn.execute("select 41 + 1").fetchone()[0]) == 42
    finally:
        await bridge.close()


async def test_bridge_hands_exceptions_back_and_keeps_serving(db_path):
    bridge = SQLiteBridge(_connector(db_path))
    conn = await bridge.open()
    try:
        with pytest.raises(sqlite3.OperationalError, match="syntax"):
            await bridge.run(conn.execute, "not sql")
        assert await bridge.run(lambda: 7) == 7
    finally:
        await bridge.close()


async def test_bridge_is_idle_only_when_no_request_is_outstanding(db_path):
    bridge = SQLiteBridge(_connector(db_path))
    assert not bridge.idle  # not open yet: there is no connection to use
    await bridge.open()
    try:
        assert bridge.idle
        gate = threading.Event()
        blocked = bridge.run(gate.wait, 30)
        assert not bridge.idle  # the thread may be using the connection now
        gate.set()
        assert await blocked is True
        assert bridge.idle
    finally:
        await bridge.close()
    assert not bridge.idle


async def test_a_cancelled_wait_does_not_stop_the_bridge(db_path):
    bridge = SQLiteBridge(_connector(db_path))
    await bridge.open()
    try:
        gate = threading.Event()
        waiting = asyncio.ensure_future(bridge.run(gate.wait, 30))
        await asyncio.sleep(0)
        waiting.cancel()
        gate.set()
        assert await bridge.run(lambda: "after") == "after"
        assert bridge.idle
    finally:
        await bridge.close()


async def test_close_waits_for_earlier_requests_then_closes_the_connection(db_path):
    bridge = SQLiteBridge(_connector(db_path))
    conn = await bridge.open()
    conn.execute("create table t (x)")
    insert = bridge.run(conn.execute, "insert into t values (1)")
    await bridge.close()
    await insert
    with pytest.raises(sqlite3.ProgrammingError):
        conn.execute("select 1")
    check = sqlite3.connect(db_path)
    assert check.execute("select count(*) from t").fetchone()[0] == 1
    check.close()


def test_the_sqlite_backend_needs_no_aiosqlite(tmp_path):
    """The bridge is built on sqlite3 and a thread: nothing of aiosqlite, private or public, is used."""
    script = (
        "import sys, asyncio\n"
        "sys.modules['aiosqlite'] = None  # importing it now raises ImportError\n"
        "from prismq_queue import Queue\n"
        "async def main():\n"
        "    async with Queue(sys.argv[1]) as q:\n"
        "        task_id = await q.enqueue('t', {'x': 1})\n"
        "        (task,) = await q.claim('w')\n"
        "        await q.complete(task, 'done')\n"
        "        print((await q.get(task_id)).status.value)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "q.db")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "completed"


async def test_the_queue_closes_its_database_thread(db_path):
    before = {t.ident for t in threading.enumerate()}
    async with Queue(db_path) as q:
        await q.enqueue("t")
    for _ in range(500):  # the thread ends just after it answers the close
        extra = [t for t in threading.enumerate() if t.ident not in before and t.name == "prismq-sqlite"]
        if not extra:
            break
        await asyncio.sleep(0.01)
    assert not extra


# ---------------------------------------------------------------- single calls on the loop's thread
def _count_hops(queue):
    """Count the requests a queue's backend sends to its database thread."""
    bridge = queue.backend._bridge
    served = []
    run = bridge.run

    def counting(fn, *args):
        served.append(fn)
        return run(fn, *args)

    bridge.run = counting
    return served


async def test_single_calls_do_not_hop_to_the_database_thread(db_path):
    """Enqueue, claim, complete, fail, get and cancel run on the loop's thread when the lock is free."""
    async with Queue(db_path) as q:
        hops = _count_hops(q)
        n = 200
        ids = [await q.enqueue("t", {"i": i}) for i in range(n)]
        for i in range(n // 2):
            (task,) = await q.claim("w")
            if i % 2:
                await q.complete(task, {"ok": i})
            else:
                await q.fail(task, "boom", retry=False)
        for task_id in ids:
            assert (await q.get(task_id)) is not None
        cancelled = sum([await q.cancel(task_id) for task_id in ids])
        assert cancelled == n - n // 2
        calls = n + n + n + n
        # A transient SQLITE_BUSY (the checkpointer's wal-index work) may send a call over; most stay.
        assert len(hops) <= calls // 20, f"{len(hops)} of {calls} calls hopped"
        stats = await q.stats()
        assert stats["by_status"]["completed"] == n // 4 and stats["by_status"]["failed"] == n // 4


async def test_durability_full_never_commits_on_the_loop_thread(db_path):
    """Under durability='full' a COMMIT waits for an fsync: every write goes to the database thread."""
    async with Queue(db_path, durability="full") as q:
        hops = _count_hops(q)
        task_id = await q.enqueue("t")
        (task,) = await q.claim("w")
        await q.complete(task)
        await q.cancel(task_id)
        assert len(hops) == 4
        await q.get(task_id)  # a read has nothing to sync
        assert len(hops) == 4


async def test_big_payloads_and_batches_go_to_the_database_thread(db_path):
    async with Queue(db_path) as q:
        hops = _count_hops(q)
        await q.enqueue("t", "x" * 100_000)
        await q.enqueue_many([("t", i) for i in range(100)])
        tasks = await q.claim("w", limit=100)  # up to 100 rows: too many for the loop's thread
        assert len(tasks) == 100
        assert len(hops) == 3
        await q.enqueue_many([("t", i) for i in range(50)])
        assert len(await q.claim("w", limit=50)) == 50  # an idle Worker's batch: short enough
        assert len(hops) == 4  # (the enqueue_many)


async def test_a_claim_that_recovers_expired_leases_goes_to_the_database_thread(db_path):
    """Recovery may touch any number of rows: not on the loop's thread."""
    async with Queue(db_path) as q:
        await q.enqueue_many([("t", i) for i in range(50)])
        assert len(await q.claim("dead", limit=50, lease_seconds=0.01)) == 50
        await asyncio.sleep(0.05)
        hops = _count_hops(q)
        (task,) = await q.claim("w")
        assert len(hops) == 1
        assert (await q.stats())["by_status"]["queued"] == 49


async def test_a_short_call_waits_behind_earlier_requests(db_path):
    async with Queue(db_path) as q:
        batch = asyncio.ensure_future(q.enqueue_many([("t", i) for i in range(5000)]))
        await asyncio.sleep(0)  # the batch is now with the database thread
        assert not q.backend._bridge.idle
        single = await q.enqueue("t", "after")
        ids = await batch
        assert single > max(ids)


async def _turns_during(calls, call):
    """How many of `calls` awaited calls `call(i)` let another coroutine (a ticker) run."""
    ticks = 0
    stop = False

    async def ticker():
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0)

    t = asyncio.ensure_future(ticker())
    await asyncio.sleep(0)
    turns = 0
    for i in range(calls):
        before = ticks
        await call(i)
        turns += ticks != before
    stop = True
    await t
    return turns


async def test_direct_calls_give_other_coroutines_a_turn(db_path):
    async with Queue(db_path) as q:
        turns = await _turns_during(4000, lambda i: q.enqueue("t", i))
        # At least one turn per SHORT_RUN (16) direct calls in a row.
        assert turns >= 4000 // 16, f"other coroutines ran during only {turns} of 4,000 single calls"


async def test_a_worker_taking_tasks_now_and_then_never_pays_the_forced_turn(db_path, monkeypatch):
    """The forced turn is for calls *in a row*: a worker waits for work between its claims,
    and the loop runs other coroutines then, however many claims it makes in all."""
    from prismq_queue.backends import sqlite as sqlite_backend

    forced = []

    class _Asyncio:
        def __getattr__(self, name):
            return getattr(asyncio, name)

        @staticmethod
        def sleep(delay):
            forced.append(delay)
            return asyncio.sleep(delay)

    async with Queue(db_path) as q:
        started = asyncio.Event()
        worker = Worker(q, concurrency=5, handle_signals=False)
        worker.register("t", lambda task: started.set())
        run = asyncio.ensure_future(worker.run())
        raw = sqlite3.connect(db_path, isolation_level=None)
        try:
            await asyncio.sleep(0.05)
            monkeypatch.setattr(sqlite_backend, "asyncio", _Asyncio())
            for _ in range(3 * sqlite_backend.SHORT_RUN):  # two direct trips each: claim, acknowledge
                started.clear()
                raw.execute("INSERT INTO prismq_tasks (type, payload, priority, status, run_at, max_attempts, "
                            "created_at) VALUES ('t', 'null', 100, 'queued', 0, 5, 0)")
                await asyncio.wait_for(started.wait(), 10)
                await asyncio.sleep(0.002)
            assert worker.completed >= 3 * sqlite_backend.SHORT_RUN - 1
            assert forced == []
        finally:
            monkeypatch.undo()
            raw.close()
            worker.stop()
            await run


class _Clock:
    """The time module as backends/sqlite.py sees it, with a monotonic clock that advances
    `step` seconds per reading: a machine as fast, or as slow (cachegrind, heavy load), as wanted."""

    def __init__(self, step):
        self.step = step
        self.now = time.monotonic()

    def monotonic(self):
        self.now += self.step
        return self.now

    def __getattr__(self, name):
        return getattr(time, name)


@pytest.mark.parametrize("step", [0.0, 0.01])
async def test_turns_given_by_direct_calls_do_not_depend_on_the_clock(db_path, monkeypatch, step):
    """How often single calls let the loop run other coroutines decides part of the work a
    sequence of calls does: the cost family counts that work, so it must not depend on how
    fast the machine runs (a time limit made get and claim + complete counts move 1-3%)."""
    from prismq_queue.backends import sqlite as sqlite_backend

    monkeypatch.setattr(sqlite_backend, "time", _Clock(step))
    async with Queue(db_path) as q:
        ids = await q.enqueue_many([("t", i) for i in range(10)])
        turns = await _turns_during(320, lambda i: q.get(ids[i % 10]))
        assert turns == 320 // sqlite_backend.SHORT_RUN, f"{turns} turns in 320 direct calls at {step} s per clock reading"


_HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
print("released", time.monotonic(), flush=True)
conn.execute("COMMIT")
"""


async def test_the_loop_runs_while_another_process_holds_the_write_lock(db_path):
    """Single calls made while another process holds the lock wait on the database thread, not the loop."""
    async with Queue(db_path) as q:
        first = await q.enqueue("t", "before")
        hold = 2.0
        holder = subprocess.Popen([sys.executable, "-c", _HOLDER, db_path, str(hold)], stdout=subprocess.PIPE,
                                  text=True)
        loop = asyncio.get_running_loop()
        try:
            assert (await loop.run_in_executor(None, holder.stdout.readline)).strip() == "locked"
            lateness = []
            stop = asyncio.Event()

            async def ticker():
                while not stop.is_set():
                    due = loop.time() + 0.001
                    await asyncio.sleep(0.001)
                    lateness.append(loop.time() - due)

            tick = asyncio.ensure_future(ticker())
            started = time.monotonic()
            calls = []
            while time.monotonic() - started < hold / 2:
                calls.append(asyncio.ensure_future(q.enqueue("t", len(calls))))
                assert (await q.get(first)).payload == "before"  # reads do not wait for writers in WAL
                await asyncio.sleep(0.002)
            ids = await asyncio.gather(*calls)
            done = time.monotonic()
            stop.set()
            await tick
            released = float((await loop.run_in_executor(None, holder.stdout.readline)).split()[1])
        finally:
            holder.wait(timeout=60)
        assert done >= released  # the writes really waited for the lock ...
        assert len(set(ids)) == len(calls)
        # ... and the loop did not: a blocked loop would be late by the whole hold (2 s). The
        # bound is generous because the test machine may be loaded; the benchmark measures it.
        assert max(lateness) < 0.5, f"the ticker was {max(lateness) * 1000:.0f} ms late"
