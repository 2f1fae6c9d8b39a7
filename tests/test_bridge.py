"""The bridge between the event loop and the SQLite connection (prismq_queue/backends/sqlite_bridge.py)."""

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading

import pytest

from prismq_queue import Queue
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
