"""PostgreSQL under adversity (issue 9, items 3 and 15), against the real server the tests start:
a call cancelled inside a transaction, and passwords given in the URL."""

import asyncio
import time

import pytest

from prismq_queue import DatabaseError, InvalidArgument, Queue, Strategy

asyncpg = pytest.importorskip("asyncpg")


async def _wait_until_blocked(observer, pid, timeout=60.0):
    """Wait until the server shows backend `pid` waiting for a lock (generous: the machine may be loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = await observer.fetchval(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $1", pid)
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"backend {pid} never waited for the lock")


CALLS = {
    "stats": lambda q: q.stats(),
    "keyed enqueue_many": lambda q: q.enqueue_many([("t", 1, {"idempotency_key": "a"}),
                                                    ("t", 2, {"idempotency_key": "b"})]),
    "weighted claim": lambda q: q.claim("w", limit=5, strategy=Strategy.WEIGHTED_RANDOM),
}


@pytest.mark.parametrize("call", list(CALLS))
async def test_call_cancelled_inside_a_transaction_leaves_the_queue_usable(pg_location, call):
    async with Queue(pg_location, busy_timeout=300) as q:
        await q.enqueue_many([("t", i, {"priority": i}) for i in range(3)])
        backend = q.backend
        blocker = await asyncpg.connect(backend.dsn)
        try:
            # Another session holds the table: the call opens its transaction and
            # then waits on the lock, where it is cancelled.
            lock = blocker.transaction()
            await lock.start()
            await blocker.execute(f'LOCK TABLE "{backend.schema}".prismq_tasks IN ACCESS EXCLUSIVE MODE')
            pid = backend._conn.get_server_pid()
            running = asyncio.ensure_future(CALLS[call](q))
            observer = await asyncpg.connect(backend.dsn)
            try:
                await _wait_until_blocked(observer, pid)
            finally:
                await observer.close()
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
            await lock.rollback()
        finally:
            await blocker.close()
        # Later calls work, and what they write is committed.
        new = await q.enqueue("after", "x")
        keyed = await q.enqueue_many([("after", 1, {"idempotency_key": "c"}), ("after", 2, {"idempotency_key": "d"})])
        assert (await q.stats())["by_type"]["after"]["queued"] == 3
    async with Queue(pg_location) as again:
        for task_id in (new, *keyed):
            assert (await again.get(task_id)).type == "after"


SECRET = "s3cret-Pa55"


def test_password_in_query_is_masked_in_the_url(pg_url):
    url = f"{pg_url}{'&' if '?' in pg_url else '?'}password={SECRET}&sslpassword={SECRET}x"
    q = Queue(url)
    assert SECRET not in q.backend.url and "password=***" in q.backend.url
    assert "sslpassword=***" in q.backend.url


@pytest.mark.parametrize("bad_url", [
    f"postgresql://user:{SECRET}@127.0.0.1:1/db?schema=a&schema=b",
    f"postgresql://user@127.0.0.1:1/db?password={SECRET}&schema=a&schema=b",
])
def test_password_is_masked_in_argument_errors(bad_url):
    with pytest.raises(InvalidArgument) as info:
        Queue(bad_url)
    assert SECRET not in str(info.value) and "schema" in str(info.value)


async def test_password_is_masked_in_connection_errors():
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    for url in (f"postgresql://user@127.0.0.1:1/db?password={SECRET}",
                f"postgresql://user:{SECRET}@127.0.0.1:1/db"):
        q = Queue(url, connect_timeout=30)
        with pytest.raises(DatabaseError) as info:
            await q.open()
        assert SECRET not in str(info.value) and "127.0.0.1" in str(info.value)


@pytest.mark.parametrize("call", list(CALLS))
async def test_cancellation_at_any_moment_never_leaves_a_transaction_open(pg_location, call):
    # Cancelled at every point of its life, several times over (the moment that
    # matters, a BEGIN or COMMIT in flight, lasts one network trip): afterwards
    # the connection is never inside a transaction, and the next write commits.
    async with Queue(pg_location, busy_timeout=300) as q:
        await q.enqueue_many([("t", i, {"priority": i}) for i in range(3)])
        observer = await asyncpg.connect(q.backend.dsn)
        try:
            for attempt in range(192):
                running = asyncio.ensure_future(CALLS[call](q))
                for _ in range(attempt % 16):
                    await asyncio.sleep(0)
                running.cancel()
                try:
                    await running
                except asyncio.CancelledError:
                    pass
                conn = q.backend._conn
                assert conn.is_closed() or not conn.is_in_transaction(), f"attempt {attempt}"
                if attempt % 16 == 15:
                    new = await q.enqueue("after")
                    table = f'"{q.backend.schema}".prismq_tasks'
                    assert await observer.fetchval(f"SELECT count(*) FROM {table} WHERE id = $1", new) == 1
        finally:
            await observer.close()
