"""The cost family's PostgreSQL workloads (benchmarks/_cost_child.py): what a count sees of
the server must not depend on when the server's background work happened to run, nor on
how fast the server answered.

The client sorts each claimed batch (RETURNING gives no order), and how much sorting it
does follows the plan the server picked, which follows the table's statistics: whether
autovacuum had analyzed a freshly filled queue before the drain decided the client's drain
figure within 2.7%. So the child's prepare step analyzes each queue it fills and turns
autovacuum off for its tables: every count then runs against the same statistics.

And a drain's reply that was already in the socket when the client polled saved the client
a loop turn; the drain queues' server holds each updating statement's reply back
(REPLY_DELAY), so the client always waits for it, as it does natively.
"""

import asyncio
import json
import os
import subprocess
import sys
import time

CHILD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "_cost_child.py")


async def _tables(url, schema):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return {r["relname"]: (r["reloptions"] or [], r["reltuples"]) for r in await conn.fetch(
            "SELECT c.relname, c.reloptions, c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relkind = 'r'", schema)}
    finally:
        await conn.close()


def _prepare(plan_path, runs):
    plan_path.write_text(json.dumps({"runs": runs}))
    r = subprocess.run([sys.executable, CHILD, "prepare", str(plan_path)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONHASHSEED="0"), timeout=300)
    assert r.returncode == 0, r.stderr


async def _update_seconds(url, schema):
    """Wall time of an UPDATE of the task table (of no row: a statement-level trigger still fires)."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        start = time.monotonic()
        await conn.execute(f'UPDATE "{schema}".prismq_tasks SET attempts = attempts WHERE id < 0')
        return time.monotonic() - start
    finally:
        await conn.close()


def _delay():
    sys.path.insert(0, os.path.dirname(CHILD))
    try:
        import _cost_child
    finally:
        sys.path.remove(os.path.dirname(CHILD))
    return _cost_child.REPLY_DELAY


def test_drain_queues_hold_back_the_reply_to_an_updating_statement(pg_location, pg_url, tmp_path):
    _prepare(tmp_path / "plan.json", [{"pg_drain": {"loc": pg_location, "n": 10},
                                       "pg_enqueue": {"loc": pg_location + "_enq", "n": 10}}])
    delay = _delay()
    schema = pg_location.rsplit("schema=", 1)[1]
    # a lower bound only: a loaded machine can make it slower, never faster than the sleep
    assert asyncio.run(_update_seconds(pg_url, schema)) >= delay
    # an enqueue queue is left as it is (its trips do not race): no trigger of the count's on its tables
    assert asyncio.run(_triggers(pg_url, schema + "_enq")) == []
    assert ("prismq_tasks", "prismq_cost_reply_delay") in asyncio.run(_triggers(pg_url, schema))


async def _triggers(url, schema):
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(
            "SELECT c.relname, t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND t.tgname LIKE 'prismq_cost%'",
            schema)]
    finally:
        await conn.close()


def test_prepared_postgres_queues_are_analyzed_and_left_alone_by_autovacuum(pg_location, pg_url, tmp_path):
    _prepare(tmp_path / "plan.json", [{"pg_drain": {"loc": pg_location, "n": 30}},
                                      {"pg_drain": {"loc": pg_location + "_big", "n": 70}}])
    for suffix, n in (("", 30), ("_big", 70)):
        schema = pg_location.rsplit("schema=", 1)[1] + suffix
        tables = asyncio.run(_tables(pg_url, schema))
        assert "prismq_tasks" in tables, tables
        for name, (options, _) in tables.items():
            assert "autovacuum_enabled=false" in options, (schema, name, options)
        # reltuples is -1 until the table is first vacuumed or analyzed (PostgreSQL 14+)
        assert tables["prismq_tasks"][1] == n, (schema, tables)
