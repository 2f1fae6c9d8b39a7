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
