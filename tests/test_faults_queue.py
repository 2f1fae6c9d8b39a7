"""Adversarial inputs to the Queue API (issue 9): each must be refused with the package's own
error, or stored and read back exactly; never accepted and then poisoning later calls."""

import asyncio
import math
import os
import threading
import time
import tracemalloc
from datetime import datetime

import pytest

from prismq_queue import InvalidArgument, PayloadError, Queue, RetryPolicy, Strategy, TaskStatus, Worker
from prismq_queue.validation import MAX_NESTING

from helpers import statements_run


def nested(depth):
    """A list nested `depth` levels deep: [[[...]]]."""
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


async def total(queue):
    return (await queue.stats())["total"]


# -- item 2: lone surrogates --------------------------------------------------

async def test_lone_surrogate_result_fails_only_its_task(queue):
    # A file name decoded with os.fsdecode carries lone surrogates: JSON encodes
    # them, UTF-8 cannot. The task that returns one fails with a clear error, the
    # one that raises one fails with its text escaped, and the others complete.
    async def returns_it(task):
        return {"file": "report-\udcff.txt"}

    async def raises_it(task):
        raise FileNotFoundError("no such file: report-\udcff.txt")

    async def fine(task):
        return task.payload

    bad_result = await queue.enqueue("returns_it", max_attempts=1)
    bad_error = await queue.enqueue("raises_it", max_attempts=1)
    good = await queue.enqueue_many([("fine", i) for i in range(20)])
    worker = Worker(queue, concurrency=4, handle_signals=False)
    for name, fn in (("returns_it", returns_it), ("raises_it", raises_it), ("fine", fine)):
        worker.register(name, fn)
    await asyncio.wait_for(worker.run(until_empty=True), 60)

    task = await queue.get(bad_result)
    assert task.status == TaskStatus.FAILED and task.result is None
    assert "result" in task.error and "surrogates not allowed" in task.error
    task = await queue.get(bad_error)
    assert task.status == TaskStatus.FAILED
    assert task.error == "FileNotFoundError: no such file: report-\\udcff.txt"
    assert [(await queue.get(i)).result for i in good] == list(range(20))


async def test_lone_surrogate_in_fail_text_and_complete_result(queue):
    await queue.enqueue_many([("t", 1), ("t", 2)])
    first, second = await queue.claim("w", limit=2)
    assert await queue.fail(first, "bad \udcff name", retry=False) == TaskStatus.FAILED
    assert (await queue.get(first.id)).error == "bad \\udcff name"
    with pytest.raises(PayloadError, match="surrogate"):
        await queue.complete(second, "\udcff")
    await queue.complete(second, "fine")  # the lease is intact, the next round trip works
    assert (await queue.get(second.id)).result == "fine"


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many", "type", "key"])
async def test_lone_surrogate_refused_at_enqueue(queue, how):
    with pytest.raises(InvalidArgument, match="Unicode|surrogate"):
        if how == "enqueue":
            await queue.enqueue("t", ["\udcff"])
        elif how == "enqueue_many":
            await queue.enqueue_many([("t", 1), ("t", {"f": "\udcff"})])
        elif how == "type":
            await queue.enqueue_many([("t\udcff", 1)])
        else:
            await queue.enqueue("t", idempotency_key="k\udcff")
    if how in ("enqueue", "enqueue_many"):
        with pytest.raises(PayloadError):
            await queue.enqueue_many([("t", 1), ("t", {"f": "\udcff"})])
    assert await total(queue) == 0
    assert await queue.enqueue("t", "é ok") > 0  # valid non-ASCII text is fine


# -- item 5: nesting too deep to decode ------------------------------------------

@pytest.mark.parametrize("depth", [MAX_NESTING + 1, 984])
async def test_deep_payload_refused_at_enqueue(queue, depth):
    with pytest.raises(PayloadError, match="nests"):
        await queue.enqueue("t", nested(depth))
    with pytest.raises(PayloadError, match="task 1 .*nests"):
        await queue.enqueue_many([("t", 1), ("t", {"a": nested(depth)})])
    with pytest.raises(PayloadError, match="nests"):
        await queue.enqueue_many([{"type": "t", "payload": nested(depth)}])
    assert await total(queue) == 0


async def test_deepest_accepted_payload_reads_back_everywhere(queue):
    tid = await queue.enqueue("t", nested(MAX_NESTING))
    (task,) = await queue.claim("w")
    assert task.payload == nested(MAX_NESTING)
    with pytest.raises(PayloadError, match="nests"):
        await queue.complete(task, {"deep": nested(MAX_NESTING)})
    await queue.complete(task, nested(MAX_NESTING))
    assert (await queue.get(tid)).result == nested(MAX_NESTING)
    assert [t.id for t in await queue.list_tasks()] == [tid]


async def test_self_referencing_payload_is_a_payload_error(queue):
    loop = []
    loop.append(loop)
    with pytest.raises(PayloadError):
        await queue.enqueue("t", loop)
    assert await total(queue) == 0


# -- item 21: non-string dict keys ------------------------------------------------

@pytest.mark.parametrize("payload", [{1: "a", "1": "b"}, {1: "a"}, [{"ok": {None: 1}}], {"a": [{2.5: 1}]},
                                     {True: 1}])
async def test_non_string_keys_refused(queue, payload):
    with pytest.raises(PayloadError, match="not a string"):
        await queue.enqueue("t", payload)
    with pytest.raises(PayloadError, match="not a string"):
        await queue.enqueue_many([("t", payload)])
    assert await total(queue) == 0
    await queue.enqueue("t", {"1": "b"})
    (task,) = await queue.claim("w")
    with pytest.raises(PayloadError, match="not a string"):
        await queue.complete(task, payload)
    await queue.complete(task, {"x": 1})
    assert (await queue.get(task.id)).result == {"x": 1}


# -- item 12: extend_lease with a bad duration -------------------------------------

@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, 0, "30", None, True])
async def test_extend_lease_refuses_bad_durations(queue, bad):
    await queue.enqueue("t")
    (task,) = await queue.claim("w", lease_seconds=30)
    before = (await queue.get(task.id)).lease_until
    with pytest.raises(InvalidArgument, match="lease_seconds"):
        await queue.extend_lease(task, bad)
    with pytest.raises(InvalidArgument, match="lease_seconds"):
        await queue.extend_leases([task], bad)
    after = await queue.get(task.id)
    assert after.lease_until == before and after.status == TaskStatus.RUNNING
    assert await queue.extend_lease(task, 60) > before


# -- items 19 and 20: arguments that were accepted or raised raw errors -------------------------

async def test_run_at_out_of_range_is_invalid_argument(queue):
    for run_at in (datetime.min, datetime.min.replace(year=1, month=1, day=1)):
        with pytest.raises(InvalidArgument, match="run_at"):
            await queue.enqueue("t", run_at=run_at)
        with pytest.raises(InvalidArgument, match="run_at"):
            await queue.enqueue_many([("t", 1)], run_at=run_at)
    assert await total(queue) == 0


async def test_checkpoint_mode_must_be_a_string(db_path):
    async with Queue(db_path) as q:
        with pytest.raises(InvalidArgument, match="mode"):
            await q.checkpoint(1)


async def test_claim_lease_must_be_finite(queue):
    await queue.enqueue("t")
    with pytest.raises(InvalidArgument, match="lease_seconds"):
        await queue.claim("w", lease_seconds=math.inf)
    assert (await queue.stats())["by_status"]["queued"] == 1


@pytest.mark.parametrize("kwargs", [{"lease_seconds": "30"}, {"lease_seconds": math.inf},
                                    {"lease_seconds": math.nan}, {"heartbeat_interval": -1},
                                    {"heartbeat_interval": math.nan}, {"grace_period": math.nan},
                                    {"poll_interval": "1"}])
async def test_worker_refuses_bad_durations(db_path, kwargs):
    async with Queue(db_path) as q:
        with pytest.raises(InvalidArgument, match=next(iter(kwargs))):
            Worker(q, handle_signals=False, **kwargs)


@pytest.mark.parametrize("name", ["base_delay", "factor", "max_delay"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, "1"])
def test_retry_policy_refuses_non_finite_numbers(name, bad):
    with pytest.raises(InvalidArgument, match=name):
        RetryPolicy(**{name: bad})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -1, "30"])
def test_busy_timeout_must_be_finite(db_path, bad):
    with pytest.raises(InvalidArgument, match="busy_timeout"):
        Queue(db_path, busy_timeout=bad)


def _live_threads():
    return {t for t in threading.enumerate() if t.is_alive()}


async def test_open_twice_leaks_nothing(location):
    before = _live_threads()
    q = Queue(location)
    await q.open()
    await q.open()
    await q.enqueue("t")
    await q.close()
    deadline = time.monotonic() + 30  # threads end soon after close; generous for a loaded machine
    while _live_threads() - before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _live_threads() - before
    async with Queue(location) as q:
        assert await total(q) == 1



# -- item 9: fencing tokens after os.fork() -----------------------------------------------------

def test_forked_processes_draw_different_tokens(location):
    # A Queue made before fork, as a pre-forking server does: if both processes
    # drew the same tokens, a stale holder's complete() would pass the fence.
    async def setup():
        async with Queue(location) as q:
            return await q.enqueue_many([("t", 1), ("t", 2)])

    ids = asyncio.run(setup())
    shared = Queue(location)

    async def claim_one():
        await shared.open()
        try:
            (task,) = await shared.claim("w")
            return task.token
        finally:
            await shared.close()

    pid = os.fork()
    if pid == 0:  # the child: claim one task, report through the database, leave at once
        code = 1
        try:
            asyncio.run(claim_one())
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    asyncio.run(claim_one())

    async def tokens():
        async with Queue(location) as q:
            return [(await q.get(i)).token for i in ids]

    first, second = asyncio.run(tokens())
    assert first is not None and second is not None and first != second


# -- item 13: ids are never reused -------------------------------------------------------------

async def test_purged_ids_are_never_reused(queue):
    ids = await queue.enqueue_many([("t", i) for i in range(3)])
    for task in await queue.claim("w", limit=3):
        await queue.complete(task)
    assert await queue.purge(0) == 3
    fresh = await queue.enqueue("t", "new")
    keyed = await queue.enqueue_many([("t", "keyed", {"idempotency_key": "k"})])
    assert fresh > max(ids) and keyed[0] > fresh
    assert await queue.cancel(ids[-1]) is False  # an old id names nobody's new task
    assert (await queue.get(fresh)).status == TaskStatus.QUEUED


# -- item 17: WEIGHTED_RANDOM claim cost ------------------------------------------------------

async def test_weighted_claim_with_a_huge_limit(queue):
    await queue.enqueue_many([("t", i, {"priority": i}) for i in range(3)])
    tracemalloc.start()
    try:
        tasks = await queue.claim("w", limit=10**7, strategy=Strategy.WEIGHTED_RANDOM)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sorted(t.payload for t in tasks) == [0, 1, 2]
    assert peak < 4 * 2**20  # was 111 MiB: one drawn slot per unit of limit
    one = await queue.enqueue("t", "last", priority=7)
    assert [t.id for t in await queue.claim("w", limit=2**40, strategy=Strategy.WEIGHTED_RANDOM)] == [one]
    assert await queue.claim("w", limit=2**62, strategy=Strategy.WEIGHTED_RANDOM) == []


async def test_weighted_claim_finds_due_levels_in_one_statement(db_path):
    # 2,000 priority levels hold only delayed tasks, one level above them a due
    # one: the claim must not pay a Python round of statements per delayed level.
    async with Queue(db_path) as q:
        await q.enqueue_many([("t", i, {"priority": i, "delay": 3600}) for i in range(2000)])
        due = await q.enqueue("t", "due", priority=5000)
        async with statements_run(q) as statements:
            tasks = await q.claim("w", limit=10, strategy=Strategy.WEIGHTED_RANDOM)
        assert [t.id for t in tasks] == [due]
        assert len(statements) < 20, len(statements)


# -- item 18: a relative path and os.chdir() --------------------------------------------------

async def test_relative_path_is_resolved_once_at_open(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(home)
    async with Queue("tasks.db") as q:
        os.chdir(elsewhere)  # the application moves on; the queue's helpers must not follow
        woke = asyncio.Event()
        q.arm(woke.set)  # starts the change watcher, on its own connection
        try:
            # Enough WAL for the checkpointer (its own connection, its own thread)
            # to copy pages into the database file.
            blob = "x" * 4096
            for _ in range(8):
                await q.enqueue_many([("t", blob) for _ in range(128)])
            deadline = time.monotonic() + 60
            while os.path.getsize(home / "tasks.db") < 2**20 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            q.disarm(woke.set)
        assert os.path.getsize(home / "tasks.db") >= 2**20  # the checkpointer found the right WAL
        assert (await q.stats())["total"] == 1024
    assert os.listdir(elsewhere) == []  # no stray database made in the new directory
