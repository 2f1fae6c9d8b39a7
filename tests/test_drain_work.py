"""What a Worker drain does per batch and per task (issue 12, the drain ratio), counted, never timed:
the statements a round trip runs, and that a batch applied in one statement still applies, fences
and reports each record as one statement per record did."""

import pytest
from helpers import package_calls, statements_run
from prismq_queue import Queue, TaskStatus
from prismq_queue.records import OK

BATCH = 20


async def _claimed(queue, n, worker="w"):
    await queue.enqueue_many([("t", {"i": i}) for i in range(n)])
    return (await queue.round_trip((), queue.claim_request(worker, n), recover=False)).tasks


async def test_a_batch_of_completions_is_one_statement(db_path):
    # One UPDATE per completed task cost its own bindings, step and reset each:
    # a drain's batch of 50 ran 50 of them. Now the batch is one.
    async with Queue(db_path) as q:
        tasks = await _claimed(q, BATCH)
        records = [q.complete_record(t, {"n": t.id}) for t in tasks]
        async with statements_run(q) as statements:
            trip = await q.round_trip(records, None, recover=False)
        assert trip.outcomes is None
        completing = [s for s in statements if "'completed'" in s]
        assert len(completing) == 1, completing
        for t in tasks:
            row = await q.get(t.id)
            assert row.status is TaskStatus.COMPLETED and row.result == {"n": t.id}
            assert row.finished_at == records[tasks.index(t)][4]


async def test_a_batch_of_completions_fences_each_record(queue):
    # Some records are stale (another worker holds the task now): only they are
    # refused, each with its own outcome, and the rest are applied.
    tasks = await _claimed(queue, BATCH)
    stale = tasks[::3]
    for t in stale:
        await queue.cancel(t.id)
    records = [queue.complete_record(t, t.id) for t in tasks]
    trip = await queue.round_trip(records, None, recover=False)
    assert trip.outcomes is not None
    for t, outcome in zip(tasks, trip.outcomes):
        got = await queue.get(t.id)
        if t in stale:
            assert outcome != OK and got.status is TaskStatus.CANCELLED
        else:
            assert outcome == OK and got.status is TaskStatus.COMPLETED and got.result == t.id


async def test_two_completions_of_one_task_in_a_batch_keep_the_first(db_path):
    # On SQLite as one statement per record did: the first record completes the
    # task, the second finds it completed already and changes nothing.
    async with Queue(db_path) as q:
        tasks = await _claimed(q, 3)
        records = [q.complete_record(tasks[0], "first"), q.complete_record(tasks[1], "other"),
                   q.complete_record(tasks[0], "second"), q.complete_record(tasks[2], "third")]
        await q.round_trip(records, None, recover=False)
        assert (await q.get(tasks[0].id)).result == "first"
        assert [(await q.get(t.id)).status for t in tasks] == [TaskStatus.COMPLETED] * 3


@pytest.mark.parametrize("n", [1, 2, 63, 64, 65, 130])
async def test_batches_of_any_size_complete_every_task(queue, n):
    tasks = await _claimed(queue, n)
    trip = await queue.round_trip([queue.complete_record(t, None) for t in tasks], None, recover=False)
    assert trip.outcomes is None
    assert (await queue.stats())["by_status"].get("completed") == n


async def _package_calls(path, n):
    """Calls of prismq_queue's own Python functions on the event loop's thread while a Worker drains n no-op tasks."""
    from prismq_queue import Worker

    async def noop(task):
        return None

    async with Queue(path) as q:
        await q.enqueue_many([("t", {"i": i}) for i in range(n)])
        worker = Worker(q, concurrency=50, handle_signals=False)
        worker.register("t", noop)
        with package_calls() as calls:
            await worker.run(until_empty=True)
        assert worker.completed == n
    return len(calls)


async def test_a_drained_task_costs_few_python_calls(tmp_path):
    # Per task the drain runs the handler's coroutine, builds the Task and decodes its
    # payload, and builds its finish record: 4 calls of the package's own functions,
    # the per-batch work spread over 50 tasks on top. The encoder's three calls for a
    # None result, a per-task counter method and a sort-key function made it ~8.5.
    small = await _package_calls(str(tmp_path / "small.db"), 100)
    large = await _package_calls(str(tmp_path / "large.db"), 600)
    per_task = (large - small) / 500
    assert per_task < 6, per_task
