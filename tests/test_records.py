"""The named records of prismq_queue/records.py say what the backends really return, on both backends:
a claimed row, a task row, a finish record and the stats are read by these names, so a column order
that drifts from them must fail here rather than swap two fields somewhere downstream."""

import json
import time

from prismq_queue import RetryPolicy, Task, TaskStatus, Worker
from prismq_queue import records
from prismq_queue.queue import RECENT_WINDOWS
from prismq_queue.records import (
    C_IDEMPOTENCY_KEY, C_RUN_AT, CLAIMED_FIELDS, COMPLETE, F_KIND, F_VALUE, FAIL, FINISH_FIELDS, N_IDEMPOTENCY_KEY,
    N_PAYLOAD, NEW_TASK_FIELDS, RELEASE, RETRY, TASK_FIELDS, BackendStats, ClaimRequest,
)


def test_index_constants_follow_the_field_names():
    assert FINISH_FIELDS[F_KIND] == "kind" and FINISH_FIELDS[F_VALUE] == "value"
    assert NEW_TASK_FIELDS[N_PAYLOAD] == "payload" and NEW_TASK_FIELDS[N_IDEMPOTENCY_KEY] == "idempotency_key"
    assert CLAIMED_FIELDS[C_RUN_AT] == "run_at" and CLAIMED_FIELDS[C_IDEMPOTENCY_KEY] == "idempotency_key"
    for prefix, fields in (("F_", FINISH_FIELDS), ("N_", NEW_TASK_FIELDS), ("C_", CLAIMED_FIELDS)):
        constants = {name: value for name, value in vars(records).items() if name.startswith(prefix)}
        assert sorted(constants.values()) == list(range(len(fields))), prefix
        for name, index in constants.items():
            assert fields[index] == name[len(prefix):].lower(), name


async def test_new_task_rows_are_in_the_named_order(queue):
    row = queue._new_row(123.0, "t", {"a": 1}, 7, 0, None, 3, "key-1")
    assert dict(zip(NEW_TASK_FIELDS, row)) == {
        "type": "t", "payload": '{"a":1}', "priority": 7, "run_at": 123.0, "max_attempts": 3,
        "created_at": 123.0, "idempotency_key": "key-1"}


async def test_claimed_and_task_rows_are_in_the_named_order(queue):
    before = time.time()
    tid = await queue.enqueue("t", {"a": 1}, priority=7, max_attempts=3, idempotency_key="key-1", delay=0.5)
    request = ClaimRequest("w", 1, "priority", time.time() + 60, 99)
    result = await queue.backend.cycle((), claim=request, recover=True, now=time.time() + 1)
    (row,) = result.claimed
    claimed = dict(zip(CLAIMED_FIELDS, row))
    assert claimed.pop("created_at") >= before and claimed.pop("run_at") >= before + 0.5
    assert claimed == {"id": tid, "type": "t", "payload": '{"a":1}', "priority": 7, "attempts": 1,
                       "max_attempts": 3, "idempotency_key": "key-1"}
    stored = dict(zip(TASK_FIELDS, await queue.backend.get(tid)))
    assert (stored["id"], stored["status"], stored["token"], stored["worker_id"], stored["idempotency_key"],
            stored["lease_until"], stored["attempts"]) == (tid, "running", 99, "w", "key-1", request.lease_until, 1)
    assert len(TASK_FIELDS) == len(await queue.backend.get(tid))


async def test_finish_records_are_in_the_named_order(queue):
    task = Task(5, "t", None, status=TaskStatus.RUNNING, token=9, attempts=1, max_attempts=2)
    records = [queue.complete_record(task, {"r": 1}), queue.fail_record(task, "boom"),
               queue.fail_record(task, "boom", retry=False), queue.release_record(task)]
    named = [dict(zip(FINISH_FIELDS, r)) for r in records]
    assert [n["kind"] for n in named] == [COMPLETE, RETRY, FAIL, RELEASE]
    assert {(n["task_id"], n["token"]) for n in named} == {(5, 9)}
    assert [n["value"] for n in named] == [json.dumps({"r": 1}, separators=(",", ":")), "boom", "boom", None]
    assert named[1]["when"] > named[2]["when"] - 1  # a retry's "when" is its new run_at


async def test_backend_stats_has_the_named_keys(queue):
    await queue.enqueue("t", 1)
    windows = tuple(RECENT_WINDOWS.values())
    stats = await queue.backend.stats(time.time(), windows)
    assert set(stats) == set(BackendStats.__annotations__)
    assert stats["counts"] == [("t", "queued", 1)] and set(stats["recent"]) == set(windows)


async def test_worker_counts_each_kind_of_finish(queue):
    queue.set_retry_policy("dead", RetryPolicy(max_attempts=1))
    await queue.enqueue_many([("ok", None), ("retry", None), ("dead", None)])

    def ok(task):
        return None

    def boom(task):
        raise RuntimeError("boom")

    worker = Worker(queue, concurrency=3, handle_signals=False)
    worker.register("ok", ok)
    worker.register("retry", boom)
    worker.register("dead", boom)
    await worker.run(until_empty=True)  # the retried one comes back after its backoff: not waited for
    assert (worker.completed, worker.failed) == (1, 1) and worker.retried >= 1
