"""PostgreSQL-specific behaviour: URLs and schemas, migrations, errors, LISTEN/NOTIFY wake-ups,
and the Hypothesis state machine run against PostgreSQL. Everything both backends do alike (the
queue and worker API, several worker processes, a killed worker's tasks recovered) is tested once,
on both, through the `location` and `queue` fixtures of conftest.py."""

import asyncio
import collections
import time

import pytest

from prismq_queue import (
    DatabaseError, InvalidArgument, Queue, QueueError, RetryPolicy, SchemaVersionError, Strategy, Worker,
)

asyncpg = pytest.importorskip("asyncpg", reason="the PostgreSQL backend needs asyncpg (pip install -e '.[test]')")

from prismq_queue import UnsupportedOperation  # noqa: E402
from helpers import execute  # noqa: E402
from prismq_queue.backends.postgres import PostgresBackend  # noqa: E402



def schema_of(location):
    return location.rsplit("schema=", 1)[1]


async def sql(url, query, *args):
    """Run one statement on a connection of its own (as another tool or process would)."""
    conn = await asyncpg.connect(url.split("?")[0])
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


# -- URLs and options (no server needed) -----------------------------------------


def test_postgres_urls_pick_the_postgres_backend():
    for url in ("postgresql://u@db.example:5432/app", "postgres://u@db.example/app", "POSTGRESQL://u@h/app"):
        backend = Queue(url).backend
        assert isinstance(backend, PostgresBackend) and backend.schema == "prismq"
    assert Queue("postgresql://u@h/app?schema=jobs").backend.schema == "jobs"
    assert Queue("postgresql://u@h/app", schema="jobs").backend.schema == "jobs"
    backend = Queue("postgresql://u:secret@h/app?sslmode=disable&schema=jobs").backend
    assert "secret" not in backend.url and "schema=jobs" in backend.url
    assert "sslmode=disable" in backend.dsn and "schema" not in backend.dsn


@pytest.mark.parametrize("kwargs", [
    {"schema": "pg_catalog"}, {"schema": "bad-name"}, {"schema": ""}, {"schema": "x" * 60}, {"schema": 3},
    {"durability": "sometimes"}, {"busy_timeout": 0}, {"connect_timeout": -1},
])
def test_bad_postgres_options_are_refused(kwargs):
    with pytest.raises(InvalidArgument):
        Queue("postgresql://u@h/app", **kwargs)


def test_schema_given_twice_differently_is_refused():
    with pytest.raises(InvalidArgument):
        Queue("postgresql://u@h/app?schema=a", schema="b")


async def test_unreachable_server_is_a_database_error():
    with pytest.raises(DatabaseError, match="cannot connect to PostgreSQL"):
        await Queue("postgresql://nobody@127.0.0.1:1/none", connect_timeout=5).open()


# -- schema and migrations --------------------------------------------------------


async def test_missing_database_is_a_database_error(pg_url):
    url = pg_url.split("?")[0].rsplit("/", 1)[0] + "/no_such_database"
    with pytest.raises(DatabaseError, match="no_such_database"):
        await Queue(url).open()


async def test_schema_is_created_versioned_and_chosen_by_the_user(pg_url, pg_location):
    schema = schema_of(pg_location)
    async with Queue(pg_url, schema=schema) as a, Queue(pg_location) as same, \
            Queue(pg_url, schema=schema + "_other") as other:
        tid = await a.enqueue("t", 1)
        assert (await same.get(tid)).payload == 1
        assert await other.get(tid) is None and (await other.stats())["total"] == 0
    tables = await sql(pg_url, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1 "
                               "ORDER BY 1", schema)
    assert [r[0] for r in tables] == ["prismq_tasks", "prismq_version"]
    assert (await sql(pg_url, f'SELECT version FROM "{schema}".prismq_version'))[0][0] == 1


async def test_newer_schema_version_is_refused_and_left_unchanged(pg_url, pg_location):
    schema = schema_of(pg_location)
    async with Queue(pg_location) as q:
        await q.enqueue("t")
    await sql(pg_url, f'UPDATE "{schema}".prismq_version SET version = 99')

    async def snapshot():
        return [tuple(r) for r in await sql(pg_url, "SELECT c.relname, c.relkind FROM pg_class c "
                                                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                                    "WHERE n.nspname = $1 ORDER BY 1", schema)]

    before = await snapshot()
    with pytest.raises(SchemaVersionError, match="newer"):
        await Queue(pg_location).open()
    assert await snapshot() == before
    assert (await sql(pg_url, f'SELECT version FROM "{schema}".prismq_version'))[0][0] == 99
    assert (await sql(pg_url, f'SELECT count(*) FROM "{schema}".prismq_tasks'))[0][0] == 1


async def test_a_schema_from_the_future_without_tasks_is_not_touched(pg_url, pg_location):
    schema = schema_of(pg_location)
    await sql(pg_url, f'CREATE SCHEMA "{schema}"')
    await sql(pg_url, f'CREATE TABLE "{schema}".prismq_version (version integer NOT NULL)')
    await sql(pg_url, f'INSERT INTO "{schema}".prismq_version VALUES (7)')
    with pytest.raises(SchemaVersionError):
        await Queue(pg_location).open()
    assert not await sql(pg_url, "SELECT 1 FROM information_schema.tables WHERE table_schema = $1 "
                                 "AND table_name = 'prismq_tasks'", schema)


async def test_many_queues_migrating_one_schema_at_once(pg_location):
    queues = [Queue(pg_location) for _ in range(6)]
    await asyncio.gather(*[q.open() for q in queues])
    try:
        ids = await asyncio.gather(*[q.enqueue("t", i) for i, q in enumerate(queues)])
        assert len(set(ids)) == 6
    finally:
        await asyncio.gather(*[q.close() for q in queues])


# -- the API where PostgreSQL differs ------------------------------------------------


async def test_keyed_batches_racing_on_several_connections_agree(pg_location):
    queues = [Queue(pg_location) for _ in range(4)]
    await asyncio.gather(*[q.open() for q in queues])
    try:
        for round_ in range(5):
            batches = await asyncio.gather(*[
                q.enqueue_many([("t", i, {"idempotency_key": f"r{round_}k{i % 7}"}) for i in range(20)] + [("t", -1)])
                for q in queues])
            by_key = collections.defaultdict(set)
            for ids in batches:
                for i, tid in enumerate(ids[:20]):
                    by_key[i % 7].add(tid)
            assert all(len(v) == 1 for v in by_key.values())  # one live task per key, whoever asked
            assert len({tid for v in by_key.values() for tid in v}) == 7
        assert (await queues[0].stats())["total"] == 5 * 7 + 5 * 4
    finally:
        await asyncio.gather(*[q.close() for q in queues])


async def test_weighted_random_reports_next_due_when_nothing_is_ready(pg_location):
    async with Queue(pg_location) as q:
        await q.enqueue("t", delay=60)
        request = q.claim_request("w", 5, Strategy.WEIGHTED_RANDOM, 30)
        result = await q.backend.cycle((), claim=request, recover=True, now=time.time())
        assert result.claimed == [] and result.next_due > time.time() + 50


async def test_values_postgres_cannot_store_are_refused_and_nothing_is_written(pg_location):
    async with Queue(pg_location) as q:
        with pytest.raises(InvalidArgument):
            await q.enqueue("nul\x00type")
        with pytest.raises(InvalidArgument):
            await q.enqueue_many([("t", 1), ("t", 2, {"priority": 2 ** 70})])
        assert (await q.stats())["total"] == 0
        # An error text with a NUL must not make the worker's acknowledgement fail forever.
        tid = await q.enqueue("t", "payload \x00 is JSON-escaped")
        (task,) = await q.claim("w")
        assert task.payload == "payload \x00 is JSON-escaped"
        await q.fail(task, "bad\x00byte", retry=False)
        assert (await q.get(tid)).error == "bad\\x00byte"


async def test_maintenance_on_postgres(pg_location):
    async with Queue(pg_location) as q:
        await q.enqueue_many([("a", i) for i in range(50)])
        for t in await q.claim("w", limit=10):
            await q.complete(t)
        assert await q.purge(older_than=0) == 10
        await q.vacuum()
        assert await q.integrity_check() == ["ok"]
        await execute(pg_location, "UPDATE {tasks} SET lease_until = 1 WHERE status = 'queued'")
        problems = await q.integrity_check()
        assert len(problems) == 40 and "queued but leased" in problems[0]
        with pytest.raises(UnsupportedOperation, match="pg_dump"):
            await q.backup("/tmp/never.db")
        with pytest.raises(UnsupportedOperation):
            await q.checkpoint()
        assert issubclass(UnsupportedOperation, QueueError)


async def test_a_dropped_connection_is_reopened(pg_url, pg_location):
    async with Queue(pg_location) as q:
        tid = await q.enqueue("t")
        pid = q.backend._conn.get_server_pid()
        await sql(pg_url, "SELECT pg_terminate_backend($1)", pid)
        for _ in range(3):  # the call that meets the dead connection may fail, cleanly
            try:
                assert (await q.get(tid)).id == tid
                break
            except DatabaseError as exc:
                assert "connection" in str(exc)
        else:
            raise AssertionError("the queue did not reconnect")


# -- LISTEN/NOTIFY wake-ups -------------------------------------------------------


async def _idle_worker_is_woken_by(pg_location, produce):
    async with Queue(pg_location) as q:
        started = asyncio.Event()
        worker = Worker(q, poll_interval=30)  # a poll would take 30 s: only a notification can start it
        worker.register("t", lambda task: started.set())
        runner = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.2)
            await produce()
            await asyncio.wait_for(started.wait(), 10)
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 10)


async def test_a_released_task_wakes_an_idle_worker_elsewhere(pg_location):
    async def produce():
        # A task leased elsewhere (inserted running, so the idle worker cannot take it)...
        (row,) = await execute(pg_location, "INSERT INTO {tasks} (type, payload, priority, status, run_at, "
                                            "max_attempts, created_at, token, lease_until, attempts) VALUES "
                                            "('t', 'null', 100, 'running', 0, 5, 0, 42, $1, 1) RETURNING id",
                               time.time() + 3600)
        async with Queue(pg_location) as other:
            await other.release(await other.get(row[0]))  # ...handed back: due at once, and announced

    await _idle_worker_is_woken_by(pg_location, produce)


async def test_a_lost_listen_connection_is_replaced(pg_url, pg_location):
    async def produce():
        # The idle worker's LISTEN connection dies (a server restart, a network cut)...
        await sql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'prismq_queue listener' AND datname = current_database()")
        await asyncio.sleep(0.3)
        async with Queue(pg_location) as other:  # ...yet work enqueued afterwards still wakes it
            await other.enqueue("t")

    await _idle_worker_is_woken_by(pg_location, produce)


async def test_work_added_before_the_first_wait_is_not_missed(pg_location):
    async with Queue(pg_location) as q, Queue(pg_location) as other:
        await other.enqueue("t", delay=0.3)
        done = asyncio.Event()
        worker = Worker(q, poll_interval=30)
        worker.register("t", lambda task: done.set())
        runner = asyncio.create_task(worker.run())
        try:
            await asyncio.wait_for(done.wait(), 10)  # found by next_due, not by a poll
        finally:
            worker.stop()
            await asyncio.wait_for(runner, 10)


# -- the model-based test, on PostgreSQL ------------------------------------------


def test_state_machine_on_postgres(pg_url):
    from hypothesis import settings
    from hypothesis.stateful import run_state_machine_as_test
    from test_stateful import QueueModel

    from conftest import SCHEMA_PREFIX

    counter = iter(range(10 ** 6))

    class PostgresModel(QueueModel):
        def __init__(self):
            super().__init__()  # opens a SQLite queue; swap it for a PostgreSQL one
            self.run(self.q.close())
            self.q = Queue(pg_url, schema=f"{SCHEMA_PREFIX}model_{next(counter)}",
                           retry=RetryPolicy(base_delay=0, jitter=0))
            self.run(self.q.open())

    run_state_machine_as_test(PostgresModel, settings=settings(max_examples=25, stateful_step_count=30,
                                                               deadline=None))
