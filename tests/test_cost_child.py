"""The cost family's PostgreSQL workloads (benchmarks/_cost_child.py): what a count sees of
the server must not depend on when the server's background work happened to run.

The client sorts each claimed batch (RETURNING gives no order), and how much sorting it
does follows the plan the server picked, which follows the table's statistics: whether
autovacuum had analyzed a freshly filled queue before the drain decided the client's drain
figure within 2.7%. So the child's prepare step analyzes each queue it fills and turns
autovacuum off for its tables: every count then runs against the same statistics.
"""

import asyncio
import json
import os
import subprocess
import sys

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


def test_prepared_postgres_queues_are_analyzed_and_left_alone_by_autovacuum(pg_location, pg_url, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"runs": [{"pg_drain": {"loc": pg_location, "n": 30}},
                                          {"pg_drain": {"loc": pg_location + "_big", "n": 70}}]}))
    r = subprocess.run([sys.executable, CHILD, "prepare", str(plan)], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONHASHSEED="0"), timeout=300)
    assert r.returncode == 0, r.stderr
    for suffix, n in (("", 30), ("_big", 70)):
        schema = pg_location.rsplit("schema=", 1)[1] + suffix
        tables = asyncio.run(_tables(pg_url, schema))
        assert "prismq_tasks" in tables, tables
        for name, (options, _) in tables.items():
            assert "autovacuum_enabled=false" in options, (schema, name, options)
        # reltuples is -1 until the table is first vacuumed or analyzed (PostgreSQL 14+)
        assert tables["prismq_tasks"][1] == n, (schema, tables)
