"""Schema versions, on both backends.

A new database gets prismq_queue/sql/<backend>/schema.sql; an old one gets the
numbered steps of <backend>/migrations/ since its version. Both roads must end
in the same schema (tables, columns, indexes, constraints, triggers, functions,
as the database's own catalog describes them), with the old rows intact; a
database from a newer prismq_queue is never touched.

Old databases are rebuilt here from the steps: step 1 is the schema the first
release created, each later step what a release added.
"""

import json
import re
import sqlite3

import pytest

from prismq_queue import Queue
from prismq_queue.backends.sqlite import SCHEMA_VERSION, split_script
from prismq_queue.sql import Schema, load, schema

SQLITE = schema("sqlite")
PG = schema("postgres")

# Rows of every kind, with the columns every version has had.
COLUMNS = ("type, payload, priority, status, run_at, attempts, max_attempts, created_at, lease_until, token, "
           "worker_id, result, error, idempotency_key, started_at, finished_at")
ROWS = [
    ("old", '{"n": 1}', 100, "queued", 0.0, 0, 5, 0.0, None, None, None, None, None, None, None, None),
    ("old", '{"n": 2}', 5, "queued", 4e9, 1, 5, 1.0, None, 7, None, None, "boom", "k2", 2.0, None),
    ("old", '{"n": 3}', 100, "running", 0.0, 1, 5, 2.0, 4e9, 8, "w1", None, None, "k3", 3.0, None),
    ("old", '{"n": 4}', 100, "completed", 0.0, 1, 5, 3.0, None, 9, "w1", '"ok"', None, "k4", 4.0, 5.0),
    ("other", '[4, 5]', -3, "failed", 0.0, 5, 5, 4.0, None, 10, "w2", None, "gave up", None, 5.0, 6.0),
    ("other", "null", 100, "cancelled", 9.0, 0, 1, 5.0, None, None, None, None, None, None, None, 7.0),
]


def _normal(text):
    """SQL text with comments dropped and whitespace collapsed: two ways of writing it compare equal."""
    text = re.sub(r"--[^\n]*", "", text or "")
    return re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", text)).strip()


def differences(migrated, new):
    """What differs between two shapes, one line per object or catalog row, readable in a failure."""
    found = []
    for key in sorted(set(migrated) | set(new), key=str):
        a, b = migrated.get(key), new.get(key)
        if a == b:
            continue
        if isinstance(a, list) and isinstance(b, list):
            found += [f"{key}: only in the migrated database: {row}" for row in a if row not in b]
            found += [f"{key}: only in a new database: {row}" for row in b if row not in a]
            if sorted(a, key=repr) == sorted(b, key=repr):
                found.append(f"{key}: the same, in another order: {a} != {b}")
        else:
            found.append(f"{key}: migrated {a!r}, new {b!r}")
    return found


# -- SQLite -------------------------------------------------------------------


def make_sqlite_file(path, version, rows=ROWS):
    """A file as the prismq_queue of schema `version` left it, holding `rows`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        for step in range(1, version + 1):
            for statement in split_script(SQLITE.migrations[step]):
                conn.execute(statement)
            if step == 1:
                conn.executemany(f"INSERT INTO prismq_tasks ({COLUMNS}) VALUES ({', '.join('?' * 16)})", rows)
        conn.execute(f"PRAGMA user_version = {version}")
    finally:
        conn.close()


def sqlite_shape(path):
    """The schema of a file as SQLite describes it."""
    conn = sqlite3.connect(path)
    try:
        shape = {"user_version": conn.execute("PRAGMA user_version").fetchone()[0]}
        objects = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                               "WHERE name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
        for kind, name, table, text in objects:
            entry = {"type": kind, "table": table, "sql": _normal(text)}
            if kind == "table":
                entry["columns"] = conn.execute("SELECT * FROM pragma_table_xinfo(?)", (name,)).fetchall()
                entry["indexes"] = sorted(conn.execute("SELECT name, \"unique\", origin, partial "
                                                       "FROM pragma_index_list(?)", (name,)).fetchall())
                entry["foreign_keys"] = conn.execute("SELECT * FROM pragma_foreign_key_list(?)", (name,)).fetchall()
            elif kind == "index":
                entry["columns"] = conn.execute("SELECT * FROM pragma_index_xinfo(?)", (name,)).fetchall()
            shape[name] = entry
        return shape
    finally:
        conn.close()


def _rows(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT id, {COLUMNS} FROM prismq_tasks ORDER BY id").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("version", range(1, SQLITE.version + 1))
async def test_sqlite_old_file_migrates_to_the_schema_of_a_new_one(tmp_path, version):
    new, old = str(tmp_path / "new.db"), str(tmp_path / "old.db")
    async with Queue(new):
        pass
    make_sqlite_file(old, version)
    rows = _rows(old)
    async with Queue(old) as q:
        assert [(t.id, t.payload, t.status) for t in await q.list_tasks()] == \
            [(r[0], json.loads(r[2]), r[4]) for r in reversed(rows)]
    assert differences(sqlite_shape(old), sqlite_shape(new)) == []
    assert _rows(old) == rows  # a migration step changes the schema, never a row


async def test_sqlite_shape_sees_an_index_missing_from_the_steps(tmp_path):
    # The comparison above is only as good as the shape: an extra index must show.
    new, old = str(tmp_path / "new.db"), str(tmp_path / "old.db")
    async with Queue(new):
        pass
    make_sqlite_file(old, SQLITE.version)
    conn = sqlite3.connect(new)
    conn.execute("CREATE INDEX prismq_extra ON prismq_tasks (type) WHERE status = 'queued'")
    conn.close()
    found = differences(sqlite_shape(old), sqlite_shape(new))
    assert found and all("prismq_extra" in line for line in found), found


def _indexes(path):
    return {name for name, entry in sqlite_shape(path).items() if name != "user_version" and entry["type"] == "index"}


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
    make_sqlite_file(db_path, 1, ROWS[:1])
    assert "prismq_finished" in _indexes(db_path)
    async with Queue(db_path) as q:
        (task,) = await q.claim("w")
        assert task.payload == {"n": 1}
        await q.complete(task)
    assert not {"prismq_finished", "prismq_ready_due"} & _indexes(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _make_version_3_file(path, rows):
    """A file as prismq_queue wrote it at schema 3 (INTEGER PRIMARY KEY without AUTOINCREMENT)."""
    make_sqlite_file(path, 3, [])
    conn = sqlite3.connect(path)
    for task_id, status, key in rows:
        conn.execute("INSERT INTO prismq_tasks (id, type, payload, priority, status, run_at, max_attempts, "
                     "created_at, idempotency_key, finished_at) VALUES (?, 'old', ?, 100, ?, 0, 5, 0, ?, ?)",
                     (task_id, f'{{"n": {task_id}}}', status, key, 0 if status == "completed" else None))
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


# -- PostgreSQL ---------------------------------------------------------------


def _schema_name(location):
    return location.rsplit("schema=", 1)[1]


def _fill(script, name):
    """As the backend does: the schema's quoted name and its notification channel put in."""
    return script.replace("{schema}", f'"{name}"').replace("{channel}", f"'prismq_{name}'")


async def _connect(pg_url):
    import asyncpg

    return await asyncpg.connect(pg_url.split("?")[0])


async def make_pg_schema(pg_url, name, version, rows=ROWS):
    """A schema as the prismq_queue of schema `version` left it, holding `rows`."""
    conn = await _connect(pg_url)
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE SCHEMA "{name}"')
            await conn.execute(_fill(load("postgres")["create_version_table"], name))
            for step in range(1, version + 1):
                await conn.execute(_fill(PG.migrations[step], name))
                if step == 1:
                    await conn.executemany(f'INSERT INTO "{name}".prismq_tasks ({COLUMNS}) '
                                           f"VALUES ({', '.join(f'${i}' for i in range(1, 17))})", rows)
            await conn.execute(_fill(load("postgres")["set_version"], name), version)
    finally:
        await conn.close()


# The catalog of one schema: every part a migration could forget. Names are
# compared, not oids; the schema's own name is taken out of every definition.
PG_CATALOG = {
    "relations": """SELECT c.relname, c.relkind, c.relpersistence, c.reloptions::text
                    FROM pg_class c WHERE c.relnamespace = $1::regnamespace ORDER BY 1""",
    "columns": """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                         a.attgenerated, pg_get_expr(d.adbin, d.adrelid), a.attcollation
                  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                  WHERE c.relnamespace = $1::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
                  ORDER BY c.relname, a.attnum""",
    "indexes": """SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i
                  JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relnamespace = $1::regnamespace ORDER BY 1""",
    "constraints": """SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid)
                      FROM pg_constraint WHERE connamespace = $1::regnamespace ORDER BY 1, 2""",
    "triggers": """SELECT t.tgname, pg_get_triggerdef(t.oid), t.tgenabled FROM pg_trigger t
                   JOIN pg_class c ON c.oid = t.tgrelid
                   WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal ORDER BY 1""",
    "functions": """SELECT p.proname, pg_get_functiondef(p.oid) FROM pg_proc p
                    WHERE p.pronamespace = $1::regnamespace ORDER BY 1""",
    "sequences": """SELECT c.relname, s.seqtypid::regtype::text, s.seqstart, s.seqincrement, s.seqmax, s.seqmin,
                           s.seqcache, s.seqcycle
                    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
                    WHERE c.relnamespace = $1::regnamespace ORDER BY 1""",
}


async def pg_shape(pg_url, name):
    conn = await _connect(pg_url)
    try:
        shape = {part: [tuple(str(v).replace(f'"{name}"', "S").replace(name, "S") if isinstance(v, str) else v
                              for v in row) for row in await conn.fetch(query, f'"{name}"')]
                 for part, query in PG_CATALOG.items()}
        shape["version"] = await conn.fetchval(f'SELECT version FROM "{name}".prismq_version')
        return shape
    finally:
        await conn.close()


async def _pg_rows(pg_url, name):
    conn = await _connect(pg_url)
    try:
        return [tuple(r) for r in await conn.fetch(f'SELECT id, {COLUMNS} FROM "{name}".prismq_tasks ORDER BY id')]
    finally:
        await conn.close()


@pytest.mark.parametrize("version", range(1, PG.version + 1))
async def test_postgres_old_schema_migrates_to_the_schema_of_a_new_one(pg_url, pg_location, version):
    new_location = pg_location + "_new"  # a second fresh schema (same test prefix)
    old, new = _schema_name(pg_location), _schema_name(new_location)
    async with Queue(new_location):
        pass
    await make_pg_schema(pg_url, old, version)
    rows = await _pg_rows(pg_url, old)
    async with Queue(pg_location) as q:
        assert [(t.id, t.status) for t in await q.list_tasks()] == [(r[0], r[4]) for r in reversed(rows)]
    assert differences(await pg_shape(pg_url, old), await pg_shape(pg_url, new)) == []
    assert await _pg_rows(pg_url, old) == rows


async def test_postgres_shape_sees_an_index_missing_from_the_steps(pg_url, pg_location):
    old = _schema_name(pg_location)
    await make_pg_schema(pg_url, old, PG.version)
    before = await pg_shape(pg_url, old)
    conn = await _connect(pg_url)
    try:
        await conn.execute(f'CREATE INDEX prismq_by_type ON "{old}".prismq_tasks (type)')
    finally:
        await conn.close()
    found = differences(before, await pg_shape(pg_url, old))
    assert found and all("prismq_by_type" in line for line in found), found


# -- the plan -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_new_database_gets_the_schema_file_and_an_old_one_each_later_step(backend):
    s = schema(backend)
    assert s.version == max(s.migrations) and sorted(s.migrations) == list(range(1, s.version + 1))
    assert s.plan(0) == [(s.version, s.create)]
    assert s.plan(1) == [(n, s.migrations[n]) for n in range(2, s.version + 1)]
    assert s.plan(s.version) == []
    with pytest.raises(ValueError):
        s.plan(s.version + 1)


def test_plan_from_a_middle_version_starts_after_it():
    s = Schema(3, "create", {1: "one", 2: "two", 3: "three"})
    assert s.plan(2) == [(3, "three")]
    assert s.plan(1) == [(2, "two"), (3, "three")]


def test_sql_include_fills_fragments_and_passes_placeholders_on():
    # A backend fills a statement's pieces per call site (postgres' pick_<strategy>), and a
    # fragment argument may be a placeholder that the including text fills later.
    from prismq_queue.sql import include

    fragments = {"due": "run_at <= {now}", "pick": "SELECT id WHERE {due now={now}} LIMIT {limit}"}
    text = include("x = ANY(ARRAY({pick now={now} limit=$2})) AND {schema}", fragments)
    assert text == "x = ANY(ARRAY(SELECT id WHERE {due now={now}} LIMIT $2)) AND {schema}"
    assert include(text.replace("{now}", "$1"), fragments) == \
        "x = ANY(ARRAY(SELECT id WHERE run_at <= $1 LIMIT $2)) AND {schema}"
    with pytest.raises(ValueError, match="no {limt}"):
        include("{pick now=$1 limt=$2}", fragments)
