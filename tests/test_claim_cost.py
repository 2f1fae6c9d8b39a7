"""What one claim costs (issue 9 item 17): bounded by the tasks it returns and the due
work, not by the levels that hold only delayed tasks nor by `limit`.

Cost is counted, not timed: on SQLite the virtual-machine steps of the claim's statements
(helpers.vm_steps_run), on PostgreSQL the index entries and rows of the task table the server
read (helpers.pg_entries_read). Either count is the same on an idle machine and a loaded one.
"""

import time

import pytest
from conftest import SCHEMA_PREFIX
from helpers import pg_entries_read, pg_pages_read, vm_steps_run
from prismq_queue import Queue, Strategy
from prismq_queue.strategy import CLAIM_ORDER

STEP = 100  # the progress handler runs every STEP virtual-machine instructions


async def _sqlite_claim_steps(path, delayed_levels, backlog=0, limit=10, strategy=Strategy.WEIGHTED_RANDOM):
    """VM steps of one claim (WEIGHTED_RANDOM unless told): `delayed_levels` levels each hold one delayed
    task, `backlog` due tasks wait at one level above them, and one due task above that."""
    async with Queue(path) as q:
        await q.enqueue_many([("t", i, {"priority": i, "delay": 3600}) for i in range(delayed_levels)])
        await q.enqueue_many([("t", "backlog", {"priority": delayed_levels + 1})] * backlog)
        due = await q.enqueue("t", "due", priority=delayed_levels + 2)
        async with vm_steps_run(q, STEP) as steps:
            tasks = await q.claim("w", limit=limit, strategy=strategy)
        if not backlog:
            assert [t.id for t in tasks] == [due]
        else:
            assert len(tasks) == limit
        return steps[0]


async def test_sqlite_weighted_claim_does_not_walk_delayed_levels(tmp_path):
    # 20x the levels of delayed tasks: the claim must cost about the same.
    # (It walked every level: 11 M steps, 0.5-2.4 s under the write lock, at 100,000.)
    few = await _sqlite_claim_steps(str(tmp_path / "few.db"), 500)
    many = await _sqlite_claim_steps(str(tmp_path / "many.db"), 10_000)
    assert many < 1.5 * few + 10_000, (few, many)


@pytest.mark.parametrize("strategy", [Strategy.PRIORITY, Strategy.FIFO, Strategy.LIFO])
async def test_sqlite_ordered_claims_do_not_walk_delayed_levels(tmp_path, strategy):
    # 100,000 levels hold only delayed tasks, one task is due: the claim must cost about
    # what it costs over 500 such levels. (PRIORITY walked every level: 11.7 M steps;
    # FIFO and LIFO 9.7 M.)
    few = await _sqlite_claim_steps(str(tmp_path / "few.db"), 500, strategy=strategy)
    many = await _sqlite_claim_steps(str(tmp_path / "many.db"), 100_000, strategy=strategy)
    assert many < 1.5 * few + 10_000, (few, many)


@pytest.mark.parametrize("strategy", [Strategy.PRIORITY, Strategy.FIFO, Strategy.LIFO])
async def test_sqlite_ordered_claims_keep_their_order_past_many_levels(tmp_path, strategy):
    # Past the short walk, the bounded search must hand out the same tasks in the same order.
    async with Queue(str(tmp_path / "order.db")) as q:
        await q.enqueue_many([("t", i, {"priority": i, "delay": 3600}) for i in range(1000)])
        due = [await q.enqueue("t", n, priority=2000 - n % 7 * 100) for n in range(30)]
        rows = [await q.get(i) for i in due]
        key, reverse = CLAIM_ORDER[strategy.value]
        expected = [t.id for t in sorted(rows, key=lambda t: key((t.id, None, None, t.priority, None, None,
                                                                   t.run_at)), reverse=reverse)]
        got = []
        while batch := await q.claim("w", limit=4, strategy=strategy):
            got += [t.id for t in batch]
        assert got == expected


async def _sqlite_backlog_claim_steps(path, backlog, strategy):
    """VM steps of one claim of 50 from `backlog` due tasks at one level (as
    test_postgres_ordered_claim_from_an_analyzed_backlog_reads_about_what_it_claims, analyzed too)."""
    async with Queue(path) as q:
        for _ in range(backlog // 10_000):
            await q.enqueue_many([("t", "due", {"priority": 5})] * 10_000)
        await q.enqueue_many([("t", "due", {"priority": 5})] * (backlog % 10_000))
        await q.backend._call(lambda: q.backend._raw.execute("ANALYZE").fetchall())
        async with vm_steps_run(q, STEP) as steps:
            tasks = await q.claim("w", limit=50, strategy=strategy)
        assert len(tasks) == 50
        return steps[0]


@pytest.mark.parametrize("strategy", [Strategy.PRIORITY, Strategy.FIFO, Strategy.LIFO])
async def test_sqlite_ordered_claim_from_a_backlog_costs_what_it_claims(tmp_path, strategy):
    # 20x the backlog: a claim of 50 must cost about the same (no cliff once the table is
    # analyzed, as PostgreSQL's claim had).
    small = await _sqlite_backlog_claim_steps(str(tmp_path / "small.db"), 2_000, strategy)
    large = await _sqlite_backlog_claim_steps(str(tmp_path / "large.db"), 40_000, strategy)
    assert large < 1.5 * small + 10_000, (small, large)


async def test_sqlite_weighted_claim_with_a_backlog_and_delayed_levels(tmp_path):
    # Due work is plentiful (a backlog of 3,000) and thousands of levels hold delayed
    # tasks: the cost follows the cheaper of the two (reading the backlog), so 8x the
    # delayed levels cost the same.
    small = await _sqlite_claim_steps(str(tmp_path / "small.db"), 5_000, backlog=3000)
    large = await _sqlite_claim_steps(str(tmp_path / "large.db"), 40_000, backlog=3000)
    assert large < 1.5 * small + 10_000, (small, large)


async def test_sqlite_file_of_version_4_gets_the_due_time_index(db_path):
    import sqlite3

    from prismq_queue.backends.sqlite import SCHEMA_VERSION

    async with Queue(db_path) as q:
        await q.enqueue("t", "kept", delay=3600)
    conn = sqlite3.connect(db_path)
    conn.execute("DROP INDEX prismq_ready_time")  # as a version 4 file has it
    conn.execute("PRAGMA user_version = 4")
    conn.commit()
    conn.close()
    async with Queue(db_path) as q:
        assert [t.payload for t in await q.list_tasks()] == ["kept"]
    conn = sqlite3.connect(db_path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5
        assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'prismq_ready_time'").fetchone()
    finally:
        conn.close()


# -- PostgreSQL: index entries read, from the server's statistics ---------------------------

def _schema(pg_url, name):
    """A URL naming a schema of this test run (dropped at its end under PRISMQ_TEST_PG)."""
    return f"{pg_url}{'&' if '?' in pg_url else '?'}schema={SCHEMA_PREFIX}{name}"


async def _pg_claim_reads(url, delayed_levels=0, due_levels=1, due_per_level=1, limit=10,
                          strategy=Strategy.WEIGHTED_RANDOM, analyzed=False):
    """Index entries and rows one claim reads. The planner's statistics of the table are
    pinned: none (autovacuum off for it, so that its analyze cannot come between the fill
    and the claim, by chance, as it once did in CI), or, with `analyzed`, fresh ones."""
    async with Queue(url) as q:
        table = f'"{q.backend.schema}".prismq_tasks'
        await q.backend._run(lambda c: c.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        await q.enqueue_many([("t", i, {"priority": i, "delay": 3600}) for i in range(delayed_levels)])
        await q.enqueue_many([("t", "due", {"priority": delayed_levels + level})
                              for level in range(due_levels) for _ in range(due_per_level)])
        if analyzed:
            await q.backend._run(lambda c: c.execute(f"ANALYZE {table}"))
        before = await pg_entries_read(q)
        tasks = await q.claim("w", limit=limit, strategy=strategy)
        reads = await pg_entries_read(q) - before
        assert len(tasks) == min(limit, due_levels * due_per_level)
        return reads


async def test_postgres_weighted_claim_does_not_read_the_whole_backlog(pg_url):
    # Three levels hold due tasks: 10x the tasks waiting must not cost 10x.
    # (The level walk's every step read every due task: ~12 entries per task waiting.)
    small = await _pg_claim_reads(_schema(pg_url, "claim_small"), due_levels=3, due_per_level=200)
    large = await _pg_claim_reads(_schema(pg_url, "claim_large"), due_levels=3, due_per_level=2000)
    assert large < 1.5 * small + 500, (small, large)


async def test_postgres_weighted_claim_does_not_walk_delayed_levels(pg_url):
    few = await _pg_claim_reads(_schema(pg_url, "claim_few"), delayed_levels=500)
    many = await _pg_claim_reads(_schema(pg_url, "claim_many"), delayed_levels=10_000)
    assert many < 1.5 * few + 500, (few, many)


@pytest.mark.parametrize("strategy", [Strategy.PRIORITY, Strategy.FIFO, Strategy.LIFO])
async def test_postgres_ordered_claims_do_not_walk_delayed_levels(pg_url, strategy):
    few = await _pg_claim_reads(_schema(pg_url, f"ordered_few_{strategy.value}"), delayed_levels=500,
                                strategy=strategy)
    many = await _pg_claim_reads(_schema(pg_url, f"ordered_many_{strategy.value}"), delayed_levels=100_000,
                                 strategy=strategy)
    assert many < 1.5 * few + 500, (few, many)


@pytest.mark.parametrize("strategy", [Strategy.PRIORITY, Strategy.LIFO])
async def test_postgres_ordered_claims_do_not_walk_delayed_levels_once_analyzed(pg_url, strategy):
    # As above, but the table analyzed, as autovacuum leaves a busy queue's table. (The
    # generic plan then joined the claim's picks with a scan of the whole table: 3 ->
    # 100,009 entries read; a strict xfail until the claim picked its ids before the UPDATE.)
    few = await _pg_claim_reads(_schema(pg_url, f"analyzed_few_{strategy.value}"), delayed_levels=500,
                                strategy=strategy, analyzed=True)
    many = await _pg_claim_reads(_schema(pg_url, f"analyzed_many_{strategy.value}"), delayed_levels=100_000,
                                 strategy=strategy, analyzed=True)
    assert many < 1.5 * few + 500, (few, many)


@pytest.mark.parametrize("strategy", [Strategy.FIFO, Strategy.LIFO, Strategy.PRIORITY])
async def test_postgres_ordered_claim_from_an_analyzed_backlog_reads_about_what_it_claims(pg_url, strategy):
    # 50 claimed from a backlog of 20,000 due tasks, the table analyzed: the claim reads
    # about the 50 entries it takes and the rows it changes, not the backlog. (It read
    # every row of the table: 20,056; 90,056 at a backlog of 90,000.)
    reads = await _pg_claim_reads(_schema(pg_url, f"backlog_{strategy.value}"), due_per_level=20_000, limit=50,
                                  strategy=strategy, analyzed=True)
    assert reads < 4 * 50 + 200, reads


async def _pg_priority_claim_pages(url, delayed):
    """Pages one PRIORITY claim of 50 reads from a backlog of 5,000 due tasks at level 1, after
    `delayed` tasks were added at level 0, due in an hour. The statistics are those of the
    backlog alone (analyzed before the delayed tasks came), so is the claim's plan."""
    async with Queue(url) as q:
        table = f'"{q.backend.schema}".prismq_tasks'
        await q.backend._run(lambda c: c.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)"))
        await q.enqueue_many([("t", "due", {"priority": 1})] * 5000)
        await q.backend._run(lambda c: c.execute(f"ANALYZE {table}"))
        assert len(await q.claim("w", limit=50, strategy=Strategy.PRIORITY)) == 50  # the plan is made
        for _ in range(delayed // 10_000):
            await q.enqueue_many([("t", "later", {"priority": 0, "delay": 3600})] * 10_000)
        before = await pg_pages_read(q)
        tasks = await q.claim("w", limit=50, strategy=Strategy.PRIORITY)
        pages = await pg_pages_read(q) - before
        assert [t.priority for t in tasks] == [1] * 50
        return pages


async def test_postgres_priority_claim_passes_a_level_of_delayed_tasks_by_one_seek(pg_url):
    # A level below the due work holds 100,000 delayed tasks (a batch scheduled for
    # later): the claim must cost about what it costs without them. (With the plan of
    # the backlog, the claim read prismq_ready_priority in order through every delayed
    # entry: +800 index pages; before that, the whole table: +1,400 heap pages.)
    none = await _pg_priority_claim_pages(_schema(pg_url, "level_none"), 0)
    many = await _pg_priority_claim_pages(_schema(pg_url, "level_many"), 100_000)
    assert many < 1.2 * none + 100, (none, many)


def _ready_check_steps(path, delayed_levels):
    """VM steps of the change watcher's "is any task due?" statement over `delayed_levels` levels of
    delayed tasks and one due task, on a connection of its own (as the watcher's)."""
    import asyncio
    import sqlite3

    from prismq_queue.backends.sqlite import Q

    async def fill():
        async with Queue(path) as q:
            await q.enqueue_many([("t", i, {"priority": i, "delay": 3600}) for i in range(delayed_levels)])
            await q.enqueue("t", "due", priority=delayed_levels + 1)

    asyncio.run(fill())
    conn = sqlite3.connect(path)
    ticks = []
    conn.set_progress_handler(lambda: ticks.append(1) and 0, STEP)
    try:
        assert conn.execute(Q["look"], (time.time(),)).fetchone()[1] == 1
    finally:
        conn.close()
    return len(ticks) * STEP


def test_sqlite_ready_check_does_not_walk_delayed_levels(tmp_path):
    # Every idle worker runs it after each commit anyone makes: it walked every level.
    few = _ready_check_steps(str(tmp_path / "few.db"), 500)
    many = _ready_check_steps(str(tmp_path / "many.db"), 10_000)
    assert many < 1.5 * few + 1_000, (few, many)
