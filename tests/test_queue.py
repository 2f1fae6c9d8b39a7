"""The Queue API on each backend (a real SQLite file, a real PostgreSQL server): ordering, leases,
fencing, retries, cancellation, stats."""

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest

from prismq_queue import (
    LeaseLost, Queue, RetryPolicy, Strategy, TaskCancelled, TaskStatus,
)

from helpers import commit_sync_setting, execute, is_sqlite, make_all_due


async def test_enqueue_returns_ids_and_get_reads_them_back(queue):
    tid = await queue.enqueue("resize", {"w": 100}, priority=10)
    task = await queue.get(tid)
    assert (task.id, task.type, task.payload, task.priority, task.status) == (tid, "resize", {"w": 100}, 10,
                                                                             TaskStatus.QUEUED)
    assert task.attempts == 0 and task.max_attempts == 5
    assert await queue.get(tid + 1000) is None


async def test_enqueue_many_is_one_batch_with_ids_in_order(queue):
    ids = await queue.enqueue_many([("a", {"i": i}) for i in range(100)])
    assert ids == list(range(ids[0], ids[0] + 100))
    assert [(await queue.get(i)).payload["i"] for i in ids[:3]] == [0, 1, 2]
    assert await queue.enqueue_many([]) == []


async def test_enqueue_many_takes_options_and_dicts(queue):
    ids = await queue.enqueue_many([("a", 1, {"priority": 5}), {"type": "b", "payload": 2, "delay": 60},
                                    ("c", 3, {"idempotency_key": "k"}), ("c", 4, {"idempotency_key": "k"})])
    a, b, c1, c2 = [await queue.get(i) for i in ids]
    assert a.priority == 5 and b.run_at > time.time() + 50 and c1.id == c2.id


async def test_priority_lower_number_first_then_fifo(queue):
    low = await queue.enqueue("t", "low", priority=200)
    first = await queue.enqueue("t", "first", priority=1)
    second = await queue.enqueue("t", "second", priority=1)
    default = await queue.enqueue("t", "default")
    got = await queue.claim("w", limit=10, strategy=Strategy.PRIORITY)
    assert [t.id for t in got] == [first, second, default, low]


async def test_fifo_and_lifo_order(location):
    async with Queue(location) as q:
        ids = await q.enqueue_many([("t", i) for i in range(5)])
        assert [t.id for t in await q.claim("w", limit=2, strategy=Strategy.FIFO)] == ids[:2]
        assert [t.id for t in await q.claim("w", limit=2, strategy="lifo")] == [ids[4], ids[3]]


async def test_fifo_and_lifo_ignore_priority(queue):
    ids = await queue.enqueue_many([("t", i, {"priority": p}) for i, p in enumerate([50, 1, 300, 1, 7])])
    assert [t.id for t in await queue.claim("w", limit=3, strategy=Strategy.FIFO)] == ids[:3]
    assert [t.id for t in await queue.claim("w", limit=5, strategy=Strategy.LIFO)] == [ids[4], ids[3]]


@pytest.mark.parametrize("strategy", list(Strategy))
async def test_delayed_tasks_at_a_better_priority_do_not_hide_due_ones(queue, strategy):
    await queue.enqueue_many([("t", None, {"priority": 1, "delay": 3600})] * 50)
    due = await queue.enqueue_many([("t", None, {"priority": 200})] * 3)
    got = await queue.claim("w", limit=10, strategy=strategy)
    assert sorted(t.id for t in got) == due


async def test_weighted_random_favours_low_numbers_but_starves_none(queue):
    await queue.enqueue_many([("t", None, {"priority": 1}) for _ in range(300)]
                             + [("t", None, {"priority": 10}) for _ in range(300)])
    got = await queue.claim("w", limit=100, strategy=Strategy.WEIGHTED_RANDOM)
    counts = {p: sum(1 for t in got if t.priority == p) for p in (1, 10)}
    assert len(got) == 100
    assert counts[1] > counts[10] > 0


async def test_weighted_random_fills_the_batch_when_a_level_runs_dry(queue):
    await queue.enqueue_many([("t", None, {"priority": 1})] * 3 + [("t", None, {"priority": 500})] * 3)
    got = await queue.claim("w", limit=6, strategy=Strategy.WEIGHTED_RANDOM)
    assert len(got) == 6 and len({t.id for t in got}) == 6


async def test_delayed_tasks_wait_until_due(queue):
    later = await queue.enqueue("t", "later", delay=0.3)
    absolute = await queue.enqueue("t", "abs", run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    epoch = await queue.enqueue("t", "epoch", run_at=time.time() - 5)
    assert [t.id for t in await queue.claim("w", limit=10)] == [epoch]
    await asyncio.sleep(0.35)
    assert [t.id for t in await queue.claim("w", limit=10)] == [later]
    assert (await queue.get(absolute)).status == TaskStatus.QUEUED


async def test_claim_leases_and_counts_the_attempt(queue):
    tid = await queue.enqueue("t")
    (task,) = await queue.claim("w1", lease_seconds=30)
    assert task.status == TaskStatus.RUNNING and task.attempts == 1 and task.worker_id == "w1"
    assert task.lease_until > time.time() + 25 and task.token is not None
    stored = await queue.get(tid)
    assert stored.status == TaskStatus.RUNNING and stored.token == task.token
    assert await queue.claim("w2") == []


async def test_complete_stores_the_result(queue):
    tid = await queue.enqueue("t")
    (task,) = await queue.claim("w")
    await queue.complete(task, {"ok": True})
    stored = await queue.get(tid)
    assert stored.status == TaskStatus.COMPLETED and stored.result == {"ok": True} and stored.finished_at


async def test_fail_retries_with_backoff_from_the_policy(location):
    async with Queue(location, retry=RetryPolicy(max_attempts=2, base_delay=100, jitter=0)) as q:
        tid = await q.enqueue("t")
        (task,) = await q.claim("w")
        assert await q.fail(task, "boom") == TaskStatus.QUEUED
        stored = await q.get(tid)
        assert stored.error == "boom" and 99 < stored.run_at - time.time() <= 100
        assert await q.claim("w") == []  # backing off
        # Make it due now; the second failure exhausts max_attempts=2.
        await make_all_due(location)
        (task,) = await q.claim("w")
        assert task.attempts == 2
        assert await q.fail(task, "boom again") == TaskStatus.FAILED
        assert (await q.get(tid)).status == TaskStatus.FAILED


async def test_per_type_retry_policy_is_used(queue):
    queue.set_retry_policy("flaky", RetryPolicy(max_attempts=9, base_delay=7, jitter=0))
    tid = await queue.enqueue("flaky")
    assert (await queue.get(tid)).max_attempts == 9
    (task,) = await queue.claim("w")
    await queue.fail(task, ValueError("nope"))
    stored = await queue.get(tid)
    assert 6 < stored.run_at - time.time() <= 7 and stored.error == "ValueError: nope"


async def test_fail_without_retry_dead_letters(queue):
    tid = await queue.enqueue("t")
    (task,) = await queue.claim("w")
    assert await queue.fail(task, "bad input", retry=False) == TaskStatus.FAILED
    assert (await queue.get(tid)).status == TaskStatus.FAILED


async def test_expired_lease_is_recovered_and_fences_the_old_holder(queue):
    tid = await queue.enqueue("t")
    (old,) = await queue.claim("w1", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    (new,) = await queue.claim("w2", lease_seconds=30)  # recovery, then claim again
    assert new.id == tid and new.attempts == 2 and new.token != old.token
    with pytest.raises(LeaseLost):
        await queue.complete(old, "late")
    with pytest.raises(LeaseLost):
        await queue.fail(old, "late")
    with pytest.raises(LeaseLost):
        await queue.extend_lease(old)
    await queue.complete(new, "fresh")
    assert (await queue.get(tid)).result == "fresh"


async def test_late_holder_may_finish_while_nobody_reclaimed(queue):
    tid = await queue.enqueue("t")
    (task,) = await queue.claim("w1", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    assert await queue.recover() == 1
    stored = await queue.get(tid)
    assert stored.status == TaskStatus.QUEUED and stored.run_at <= time.time()
    await queue.complete(task, "late but fine")
    assert (await queue.get(tid)).status == TaskStatus.COMPLETED


async def test_recovery_dead_letters_exhausted_tasks(queue):
    tid = await queue.enqueue("t", max_attempts=1)
    await queue.claim("w1", lease_seconds=0.05)
    await asyncio.sleep(0.1)
    assert await queue.recover() == 1
    stored = await queue.get(tid)
    assert stored.status == TaskStatus.FAILED and "lease expired" in stored.error


async def test_extend_lease_keeps_the_task(queue):
    await queue.enqueue("t")
    (task,) = await queue.claim("w1", lease_seconds=0.2)
    until = await queue.extend_lease(task, 30)
    await asyncio.sleep(0.3)
    assert await queue.claim("w2") == [] and task.lease_until == until
    await queue.complete(task)


async def test_cancel_queued_and_running(queue):
    queued = await queue.enqueue("t", priority=200)
    running = await queue.enqueue("t", priority=1)
    (task,) = await queue.claim("w")
    assert task.id == running
    assert await queue.cancel(queued) and await queue.cancel(running)
    assert not await queue.cancel(queued)  # already finished
    assert await queue.claim("w") == []
    assert (await queue.extend_leases([task], 30)) == ["cancelled"]  # what the worker's heartbeat sees
    with pytest.raises(TaskCancelled):
        await queue.complete(task, "too late")
    assert (await queue.get(running)).status == TaskStatus.CANCELLED


async def test_idempotency_key_returns_the_live_task(queue):
    a = await queue.enqueue("t", 1, idempotency_key="order-7")
    b = await queue.enqueue("t", 2, idempotency_key="order-7")
    assert a == b and (await queue.get(a)).payload == 1
    (task,) = await queue.claim("w")
    assert await queue.enqueue("t", 3, idempotency_key="order-7") == a  # running still counts
    await queue.complete(task)
    c = await queue.enqueue("t", 4, idempotency_key="order-7")  # finished: the key is free again
    assert c != a


async def test_idempotency_is_race_free_across_queues(location):
    async with Queue(location) as q1, Queue(location) as q2:
        ids = await asyncio.gather(*[q.enqueue("t", i, idempotency_key="same")
                                     for i, q in enumerate([q1, q2] * 10)])
        assert len(set(ids)) == 1
        assert (await q1.stats())["total"] == 1
        # A batch mixing keyless, already-known and new keys: the known key's task, one task per new key.
        mixed = await q2.enqueue_many([("t", 1), ("t", 2, {"idempotency_key": "same"}),
                                       ("t", 3, {"idempotency_key": "new"}), ("t", 4, {"idempotency_key": "new"})])
        assert mixed[1] == ids[0] and mixed[2] == mixed[3] and len(set(mixed)) == 3


async def test_stats(queue):
    ids = await queue.enqueue_many([("a", 1), ("a", 2), ("b", 3)])
    await queue.enqueue("c", delay=3600)
    t1, t2 = await queue.claim("w", limit=2, strategy=Strategy.FIFO)
    await queue.complete(t1)
    await queue.fail(t2, "x", retry=False)
    await queue.cancel(ids[2])
    stats = await queue.stats()
    assert stats["by_status"] == {"queued": 1, "running": 0, "completed": 1, "failed": 1, "cancelled": 1}
    assert stats["by_type"] == {"a": {"completed": 1, "failed": 1}, "b": {"cancelled": 1}, "c": {"queued": 1}}
    assert stats["oldest_due_age"] is None  # the only queued task is not due
    assert stats["recent"]["last_1m"] == {"completed": 1, "failed": 0 + 1, "cancelled": 1}
    await queue.enqueue("d", run_at=time.time() - 10)
    assert 9 < (await queue.stats())["oldest_due_age"] < 60


async def test_list_tasks_and_purge(queue):
    ids = await queue.enqueue_many([("a", i) for i in range(4)])
    tasks = await queue.claim("w", limit=2, strategy=Strategy.FIFO)
    for t in tasks:
        await queue.complete(t)
    assert {t.id for t in await queue.list_tasks(status="completed")} == set(ids[:2])
    assert [t.id for t in await queue.list_tasks(task_type="a", limit=1)] == [ids[3]]
    assert await queue.purge(older_than=3600) == 0
    assert await queue.purge(older_than=0) == 2
    assert await queue.get(ids[0]) is None and await queue.get(ids[2]) is not None


async def test_maintenance_backup_checkpoint_vacuum_integrity(queue, tmp_path):
    await queue.enqueue_many([("a", i) for i in range(50)])
    assert await queue.integrity_check() == ["ok"]
    busy, _, _ = await queue.checkpoint()
    assert busy == 0
    await queue.vacuum()
    dest = tmp_path / "copy.db"
    await queue.backup(dest)
    async with Queue(str(dest)) as copy:
        assert (await copy.stats())["by_status"]["queued"] == 50


# How each backend's connection syncs commits: SQLite's PRAGMA synchronous, PostgreSQL's synchronous_commit.
SYNCED = {"normal": {"sqlite": 1, "postgres": "off"}, "full": {"sqlite": 2, "postgres": "on"}}


@pytest.mark.parametrize("durability", ["normal", "full"])
async def test_durability_sets_how_commits_are_synced(location, durability):
    async with Queue(location, durability=durability) as q:
        sqlite = is_sqlite(location)
        assert await commit_sync_setting(q) == SYNCED[durability]["sqlite" if sqlite else "postgres"]
        if sqlite:  # the journal mode is the file's own: any connection sees it
            assert await execute(location, "PRAGMA journal_mode") == [("wal",)]


async def test_reopening_keeps_tasks(location):
    async with Queue(location) as q:
        tid = await q.enqueue("t", {"keep": True})
    async with Queue(location) as q:
        assert (await q.get(tid)).payload == {"keep": True}
