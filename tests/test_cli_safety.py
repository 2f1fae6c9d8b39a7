"""The command line facing hostile files and input (issue 9, items 16 and 22): no terminal escapes
reach the terminal, read-only commands never create or change a file, and errors are one line."""

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from prismq_queue import Queue
from prismq_queue.sql import schema


def cli(*args):
    return subprocess.run([sys.executable, "-m", "prismq_queue", *args], capture_output=True, text=True,
                          timeout=120)


def one_line_error(proc):
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


EVIL_TYPE = "evil\x1b[2J\x1b]0;pwned\x07\x9b31m"
EVIL_ERROR = "boom\x1b[31m red\nsecond line\r\x08\x00"


async def _hostile_queue(path):
    async with Queue(path) as q:
        await q.enqueue(EVIL_TYPE, {"x": 1}, max_attempts=1)
        (task,) = await q.claim("w")
        await q.fail(task, EVIL_ERROR, retry=False)


@pytest.mark.parametrize("command", [["list"], ["stats"], ["list", "--json"], ["stats", "--json"]])
def test_control_characters_are_escaped(tmp_path, command):
    db = str(tmp_path / "evil.db")
    asyncio.run(_hostile_queue(db))
    proc = cli(command[0], db, *command[1:])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for ch in "\x1b\x07\x9b\x08\x00\r":
        assert ch not in out
    if "--json" in command:
        text = json.dumps(json.loads(out.splitlines()[0] if command[0] == "list" else out))
        assert "evil" in text
    else:
        assert "evil\\x1b[2J" in out
        if command[0] == "list":
            assert "boom\\x1b[31m red\\nsecond line" in out
            assert len(out.strip().splitlines()) == 1  # the error's newline does not start a new row


@pytest.mark.parametrize("command", [["stats"], ["list"], ["check"], ["checkpoint"], ["purge", "--older-than", "0"],
                                     ["backup", "{dest}"]])
def test_missing_file_is_an_error_and_is_not_created(tmp_path, command):
    db = tmp_path / "typo.db"
    args = [a.format(dest=tmp_path / "copy.db") for a in command[1:]]
    line = one_line_error(cli(command[0], str(db), *args))
    assert "does not exist" in line
    assert not db.exists() and not (tmp_path / "copy.db").exists()
    assert sorted(os.listdir(tmp_path)) == []


def test_enqueue_still_creates_a_new_file(tmp_path):
    db = tmp_path / "new.db"
    proc = cli("enqueue", str(db), "t")
    assert proc.returncode == 0 and db.exists()


def _old_file(path):
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in schema("sqlite").migrations[1].split(";\n"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at) "
                 "VALUES ('old', '1', 100, 'queued', 0, 5, 0)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_check_never_writes(tmp_path):
    db = str(tmp_path / "old.db")
    _old_file(db)
    before = _digest(db)
    proc = cli("check", db)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "ok"
    assert "schema version 1" in proc.stdout
    assert _digest(db) == before
    assert os.listdir(tmp_path) == ["old.db"]  # no -wal or -shm left beside it either
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()


def test_deep_json_is_a_one_line_error(tmp_path):
    db = str(tmp_path / "q.db")
    line = one_line_error(cli("enqueue", db, "t", "[" * 20_000 + "]" * 20_000))
    assert "payload" in line


def test_unreadable_stored_payload_is_a_one_line_error(tmp_path):
    # A row written by an older version that accepted any depth: list and stats
    # must not crash with a traceback on it.
    db = str(tmp_path / "q.db")
    asyncio.run(_hostile_queue(db))
    conn = sqlite3.connect(db)
    conn.execute("UPDATE prismq_tasks SET payload = ?", ("[" * 20_000 + "]" * 20_000,))
    conn.commit()
    conn.close()
    assert "nests" in one_line_error(cli("list", db))
    assert cli("stats", db).returncode == 0


# -- PostgreSQL: `check` reads in a read-only transaction, never opens (creates, migrates) ----

async def _pg(url, statement, *args):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(statement, *args)
    finally:
        await conn.close()


def test_postgres_check_does_not_create_a_schema(pg_url):
    from conftest import SCHEMA_PREFIX

    schema = f"{SCHEMA_PREFIX}typo"
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    assert "holds no queue" in one_line_error(cli("check", url))
    assert not asyncio.run(_pg(pg_url, "SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema))


def test_postgres_check_does_not_migrate(pg_url, pg_location):
    async def make():
        async with Queue(pg_location) as q:
            await q.enqueue("t", 1)
            return q.backend.schema

    schema = asyncio.run(make())
    proc = cli("check", pg_location)
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["ok"], (proc.stdout, proc.stderr)
    # As a schema an older prismq_queue wrote: check reports it, and leaves it as it was.
    version_sql = f'SELECT version FROM "{schema}".prismq_version'
    asyncio.run(_pg(pg_url, f'UPDATE "{schema}".prismq_version SET version = 0 RETURNING version'))
    proc = cli("check", pg_location)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "schema version is 0" in proc.stdout
    assert asyncio.run(_pg(pg_url, version_sql)) == 0
