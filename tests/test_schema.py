"""Schema versioning: files are migrated forward on open, and never touched when they are newer."""

import sqlite3

from prismq_queue import Queue
from prismq_queue.backends.sqlite import SCHEMA_VERSION
from prismq_queue.sql import load


def _indexes(path):
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


async def test_new_file_gets_the_current_version(db_path):
    async with Queue(db_path):
        pass
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()
    assert "prismq_ready_priority" in _indexes(db_path)
    assert not {"prismq_finished", "prismq_ready_due"} & _indexes(db_path)


async def test_version_1_file_is_migrated_and_keeps_its_tasks(db_path):
    # A file as v0.1.0 wrote it: schema 1, one queued task.
    conn = sqlite3.connect(db_path)
    for statement in load("sqlite")["schema_1"].split(";\n"):
        conn.execute(statement)
    conn.execute("INSERT INTO prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at) "
                 "VALUES ('old', '{\"v\": 1}', 100, 'queued', 0, 5, 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    assert "prismq_finished" in _indexes(db_path)
    async with Queue(db_path) as q:
        (task,) = await q.claim("w")
        assert task.payload == {"v": 1}
        await q.complete(task)
    assert not {"prismq_finished", "prismq_ready_due"} & _indexes(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _make_version_3_file(path, rows):
    """A file as prismq_queue wrote it at schema 3 (INTEGER PRIMARY KEY without AUTOINCREMENT)."""
    queries = load("sqlite")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for name in ("schema_1", "schema_2", "schema_3"):
        for statement in queries[name].split(";\n"):
            if statement.strip():
                conn.execute(statement)
    for task_id, status, key in rows:
        conn.execute("INSERT INTO prismq_tasks (id, type, payload, priority, status, run_at, max_attempts, "
                     "created_at, idempotency_key, finished_at) VALUES (?, 'old', ?, 100, ?, 0, 5, 0, ?, ?)",
                     (task_id, f'{{"n": {task_id}}}', status, key, 0 if status == "completed" else None))
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()


async def test_version_3_file_migrates_and_never_reuses_ids(db_path):
    _make_version_3_file(db_path, [(1, "completed", None), (2, "queued", "k2"), (3, "queued", None)])
    async with Queue(db_path) as q:
        assert [t.payload for t in await q.list_tasks()] == [{"n": 3}, {"n": 2}, {"n": 1}]
        assert await q.enqueue("old", idempotency_key="k2") == 2  # the unique key index came through
        (top,) = [t for t in await q.claim("w", limit=2) if t.id == 3]
        await q.complete(top)
        assert await q.purge(0) == 2  # tasks 1 and 3, the highest id among them
        new = await q.enqueue("new")
        assert new == 4  # not 3 again
        assert await q.cancel(3) is False and (await q.get(new)).status == "queued"
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    assert {"prismq_ready_priority", "prismq_leases", "prismq_idempotency"} <= _indexes(db_path)


async def test_ids_stay_unique_after_purging_everything_and_reopening(db_path):
    async with Queue(db_path) as q:
        first = await q.enqueue_many([("t", i) for i in range(5)])
        for task in await q.claim("w", limit=5):
            await q.complete(task)
        await q.purge(0)
    async with Queue(db_path) as q:  # a new connection: the high-water mark is in the file
        plain = await q.enqueue("t")
        keyed = await q.enqueue("t", idempotency_key="k")
        batch = await q.enqueue_many([("t", 1), ("t", 2)])
    assert plain == max(first) + 1 and keyed == plain + 1 and batch == [keyed + 1, keyed + 2]
