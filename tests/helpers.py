"""Helpers for tests that must touch a queue's database beyond the public Queue API.

Most of them reach the database as another tool or process would: on a connection of
their own to the SQLite file or the PostgreSQL schema, never the queue's private one,
so a test keeps working whatever the backend does with its own connection. The last
section is the one exception, said there.
"""

import contextlib
import os
import sqlite3
import sys

from prismq_queue import Queue
from prismq_queue.backends.sqlite import SQLiteBackend


def is_sqlite(location):
    return isinstance(Queue(location).backend, SQLiteBackend)


async def execute(location, statement, *args):
    """Run one statement on a connection of its own and return its rows.

    The statement names the task table `{tasks}` and its parameters `$1`, `$2`, ...
    (PostgreSQL's spelling; for SQLite they become `?1`, `?2`, ...)."""
    backend = Queue(location).backend  # reads the location only: nothing is opened
    if isinstance(backend, SQLiteBackend):
        # A generous busy timeout: a worker of the test may hold the write lock for a moment.
        conn = sqlite3.connect(backend.path, isolation_level=None, timeout=60)
        try:
            return conn.execute(statement.replace("{tasks}", "prismq_tasks").replace("$", "?"), args).fetchall()
        finally:
            conn.close()
    import asyncpg

    conn = await asyncpg.connect(backend.dsn)
    try:
        return await conn.fetch(statement.replace("{tasks}", f'"{backend.schema}".prismq_tasks'), *args)
    finally:
        await conn.close()


async def make_all_due(location):
    """Make every task due now, as if its delay or back-off had passed."""
    await execute(location, "UPDATE {tasks} SET run_at = 0")


async def insert_due_task(location, task_type="t"):
    """Insert a due task with plain SQL, as another program writing the table would (no Queue involved)."""
    await execute(location, "INSERT INTO {tasks} (type, payload, priority, status, run_at, max_attempts, created_at) "
                            "VALUES ($1, 'null', 100, 'queued', 0, 5, 0)", task_type)


# -- the queue's own connection ---------------------------------------------------
# Some state belongs to one connection and no other can see it: how that connection
# syncs its commits, the statements it runs. Only these helpers read it, from the
# backend's private connection, so a change there is mended here and nowhere else.

async def commit_sync_setting(queue):
    """How the queue's connection syncs commits: SQLite's PRAGMA synchronous (1 NORMAL, 2 FULL),
    PostgreSQL's synchronous_commit ('off', 'on')."""
    backend = queue.backend
    if isinstance(backend, SQLiteBackend):
        return await backend._call(lambda: backend._raw.execute("PRAGMA synchronous").fetchone()[0])
    return await backend._run(lambda conn: conn.fetchval("SHOW synchronous_commit"))


@contextlib.contextmanager
def package_calls():
    """The names of prismq_queue's own functions called inside the block, in order, as a list."""
    import prismq_queue

    package = os.path.dirname(prismq_queue.__file__)
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(package):
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(None)


@contextlib.asynccontextmanager
async def statements_run(queue):
    """The SQL statements the SQLite queue's connection runs inside the block, as a list."""
    backend = queue.backend
    statements = []
    # The trace is set on the connection's own thread.
    await backend._call(lambda: backend._raw.set_trace_callback(statements.append))
    try:
        yield statements
    finally:
        await backend._call(lambda: backend._raw.set_trace_callback(None))


@contextlib.asynccontextmanager
async def vm_steps_run(queue, every=100):
    """The SQLite virtual-machine steps the queue's connection runs inside the block, counted to
    `every` steps: a one-item list, the count, filled in as they run."""
    backend = queue.backend
    steps = [0]

    def tick():
        steps[0] += every
        return 0  # (non-zero would interrupt the statement)

    await backend._call(lambda: backend._raw.set_progress_handler(tick, every))
    try:
        yield steps
    finally:
        await backend._call(lambda: backend._raw.set_progress_handler(None, every))


async def pg_entries_read(queue):
    """Index entries and table rows of the task table the PostgreSQL server has read so far."""
    backend = queue.backend
    # A server process publishes its counts when it goes idle, at most once a second unless
    # told to: the queue's own connection is told, so that its last statements count.
    await backend._run(lambda conn: conn.execute("SELECT pg_stat_force_next_flush()"))
    return await backend._run(lambda conn: conn.fetchval(
        "SELECT COALESCE(sum(i.idx_tup_read), 0)::bigint + COALESCE(max(t.seq_tup_read), 0)::bigint "
        "FROM pg_stat_user_tables t LEFT JOIN pg_stat_user_indexes i ON i.relid = t.relid "
        "WHERE t.schemaname = $1 AND t.relname = 'prismq_tasks'", backend.schema))


async def pg_pages_read(queue):
    """Pages of the task table and its indexes the PostgreSQL server has read so far (from its
    buffers or not). Unlike pg_entries_read, this counts the index entries a scan passes over
    without returning them (a condition on a later column of the index, checked in the index)."""
    backend = queue.backend
    await backend._run(lambda conn: conn.execute("SELECT pg_stat_force_next_flush()"))
    return await backend._run(lambda conn: conn.fetchval(
        "SELECT COALESCE(sum(i.idx_blks_hit + i.idx_blks_read), 0)::bigint "
        "       + COALESCE(max(t.heap_blks_hit + t.heap_blks_read), 0)::bigint "
        "FROM pg_statio_user_tables t LEFT JOIN pg_statio_user_indexes i ON i.relid = t.relid "
        "WHERE t.schemaname = $1 AND t.relname = 'prismq_tasks'", backend.schema))
