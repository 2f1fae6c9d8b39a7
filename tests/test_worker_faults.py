"""The worker under faults (issue 9): database outages, odd handlers, cancellation, shutdown and signals.

Outages are simulated deterministically by making the backend's `cycle` raise for a
number of calls (monkeypatching `queue.backend`); a few tests use a real fault (a
write lock held by another connection). Every test runs on both backends through
the `queue` fixture, except the signal tests, which are about the process.
"""

import asyncio
import contextvars
import os
import signal
import sqlite3
import threading
import time

import pytest

from prismq_queue import DatabaseError, QueueBusy, RetryPolicy, TaskStatus, Worker

FAST_BACKOFF = RetryPolicy(base_delay=0.0005, factor=2.0, max_delay=0.002, jitter=0.5)


def failing_cycle(queue, fails, error=DatabaseError, when=lambda finishes, claim, recover: True):
    """Make the backend's round trip raise `error` for the next `fails` calls that match `when`; returns a counter."""
    real = queue.backend.cycle
    calls = {"failed": 0, "all": 0}

    async def cycle(finishes, *, claim, recover, now):
        calls["all"] += 1
        if calls["failed"] < fails and when(finishes, claim, recover):
            calls["failed"] += 1
            raise error("simulated outage")
        return await real(finishes, claim=claim, recover=recover, now=now)

    queue.backend.cycle = cycle
    return calls


async def run_until_finished(worker, queue, tid, timeout=30):
    """Run the worker until task `tid` is finished (a retry may not be due yet when until_empty looks)."""
    async def go():
        runner = asyncio.create_task(worker.run())
        try:
            while not (await queue.get(tid)).status.finished:
                await asyncio.sleep(0.01)
        finally:
            worker.stop()
            await runner

    await asyncio.wait_for(go(), timeout)


async def statuses(queue, ids):
    return [(await queue.get(i)).status for i in ids]


# -- 1. outages: a capped, jittered backoff that really waits; run() survives any length --------


async def test_outage_backoff_really_waits_and_held_completions_are_written(queue):
    ids = await queue.enqueue_many([("t", i) for i in range(20)])
    outage = {"until": None, "calls": 0}
    real = queue.backend.cycle

    async def cycle(finishes, *, claim, recover, now):
        # The first trip claims; from the second on (holding completions), 1.5 s of outage.
        if outage["until"] is None and finishes:
            outage["until"] = time.monotonic() + 1.5
        if outage["until"] is not None and time.monotonic() < outage["until"]:
            outage["calls"] += 1
            raise DatabaseError("simulated outage")
        return await real(finishes, claim=claim, recover=recover, now=now)

    queue.backend.cycle = cycle
    worker = Worker(queue, concurrency=50)
    worker.register("t", lambda task: task.payload)
    await asyncio.wait_for(worker.run(until_empty=True), 60)
    # Backoff of 0.05 s doubling (+/- 50%): about 6 tries in 1.5 s. Without a real
    # pause it is thousands of tries, then an OverflowError ends run().
    assert 2 <= outage["calls"] < 30
    assert await statuses(queue, ids) == [TaskStatus.COMPLETED] * 20
    assert worker.completed == 20 and worker.refused == 0


async def test_run_survives_an_outage_of_any_length(queue):
    ids = await queue.enqueue_many([("t", i) for i in range(10)])
    # 1,100 failures in a row: past the point where 0.05 * 2 ** failures overflows a float.
    calls = failing_cycle(queue, 1100, when=lambda finishes, claim, recover: bool(finishes))
    worker = Worker(queue, outage_backoff=FAST_BACKOFF)
    worker.register("t", lambda task: task.payload)
    await asyncio.wait_for(worker.run(until_empty=True), 120)
    assert calls["failed"] == 1100
    assert await statuses(queue, ids) == [TaskStatus.COMPLETED] * 10


async def test_outage_from_a_real_write_lock_is_waited_out(db_path):
    """A real fault on SQLite: another connection holds the write lock past busy_timeout for a while."""
    from prismq_queue import Queue

    async with Queue(db_path, busy_timeout=0.1) as queue:
        ids = await queue.enqueue_many([("t", i) for i in range(5)])
        locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        locked = threading.Event()

        def handler(task):
            if task.payload == 0 and not locked.is_set():
                locker.execute("BEGIN IMMEDIATE")  # the worker's next trips now fail with QueueBusy
                locked.set()
                threading.Timer(1.0, locker.execute, ("COMMIT",)).start()
            return task.payload

        worker = Worker(queue, concurrency=1)
        worker.register("t", handler)
        try:
            await asyncio.wait_for(worker.run(until_empty=True), 60)
        finally:
            await asyncio.sleep(0)
        assert locked.is_set()
        assert await statuses(queue, ids) == [TaskStatus.COMPLETED] * 5
        locker.close()


# -- 4. every handler in its own Task and context -----------------------------------------------


async def test_asyncio_timeout_in_a_handler_cancels_only_that_handler(queue):
    if not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout needs Python 3.11")

    async def handler(task):
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(5)
        except TimeoutError:
            return "timed out"

    ids = await queue.enqueue_many([("t", i) for i in range(5)])
    worker = Worker(queue, concurrency=5)
    worker.register("t", handler)
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    assert [(await queue.get(i)).result for i in ids] == ["timed out"] * 5


async def test_a_failing_task_group_child_fails_only_its_handler(queue):
    if not hasattr(asyncio, "TaskGroup"):
        pytest.skip("asyncio.TaskGroup needs Python 3.11")

    async def child():
        raise ValueError("child failed")

    async def handler(task):
        async with asyncio.TaskGroup() as group:
            group.create_task(child())
            await asyncio.sleep(5)

    bad = await queue.enqueue("group", max_attempts=1)
    good = await queue.enqueue_many([("ok", i) for i in range(5)])
    worker = Worker(queue, concurrency=10)
    worker.register("group", handler)
    worker.register("ok", lambda task: "fine")
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    failed = await queue.get(bad)
    assert failed.status == TaskStatus.FAILED and "ExceptionGroup" in failed.error
    assert await statuses(queue, good) == [TaskStatus.COMPLETED] * 5


async def test_context_variables_do_not_leak_from_one_handler_to_the_next(queue):
    user = contextvars.ContextVar("user")
    seen = []

    async def handler(task):
        seen.append(user.get(None))
        user.set(task.payload)  # one request's user id...

    await queue.enqueue_many([("t", i) for i in range(5)])
    worker = Worker(queue, concurrency=1)
    worker.register("t", handler)
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    assert seen == [None] * 5  # ...never seen by the next task
    assert user.get(None) is None  # nor by the code that ran the worker


# -- 6. a handler raising CancelledError itself ---------------------------------------------------


async def test_a_handler_raising_cancelled_error_is_a_failed_attempt(queue):
    calls = 0

    async def handler(task):
        nonlocal calls
        calls += 1
        raise asyncio.CancelledError()

    tid = await queue.enqueue("t", max_attempts=2)
    worker = Worker(queue)
    worker.register("t", handler, retry=RetryPolicy(max_attempts=2, base_delay=0, jitter=0))
    await run_until_finished(worker, queue, tid)
    task = await queue.get(tid)
    assert task.status == TaskStatus.FAILED and task.attempts == 2 and calls == 2
    assert task.error.startswith("CancelledError")


# -- 7. a thread still running after the grace period keeps its lease ------------------------------


async def test_graceful_stop_never_releases_a_task_whose_thread_still_runs(queue):
    started, finish = threading.Event(), threading.Event()

    def blocking(task):  # a plain function: it runs in a thread, which cannot be cancelled
        started.set()
        finish.wait(30)
        return "late"

    tid = await queue.enqueue("t")
    worker = Worker(queue, grace_period=0.2, lease_seconds=30)
    worker.register("t", blocking)
    runner = asyncio.create_task(worker.run())
    try:
        assert await asyncio.get_running_loop().run_in_executor(None, started.wait, 10)
        worker.stop()
        await asyncio.wait_for(runner, 30)
        # The thread still runs: the task must not be handed to anyone else.
        assert (await queue.get(tid)).status == TaskStatus.RUNNING
        assert await queue.claim("second-worker") == []
    finally:
        finish.set()


# -- 8. heartbeats go on through the grace period ---------------------------------------------------


async def test_leases_are_renewed_during_the_grace_period(queue):
    started = asyncio.Event()

    async def slow(task):
        started.set()
        await asyncio.sleep(3.0)
        return "done"

    tid = await queue.enqueue("slow")
    worker = Worker(queue, lease_seconds=1.0, heartbeat_interval=0.1, grace_period=30)
    worker.register("slow", slow)
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()  # the handler finishes within the grace period, long after its first lease ran out
    await asyncio.sleep(2.0)
    assert await queue.claim("thief") == []  # only heartbeats kept the lease
    await asyncio.wait_for(runner, 30)
    task = await queue.get(tid)
    assert task.status == TaskStatus.COMPLETED and task.result == "done" and task.attempts == 1
    assert worker.refused == 0


# -- 10. the final flush is retried within the grace period -------------------------------------------


async def _stopped_while_its_handler_runs(queue):
    """A worker told to stop while the handler of its one task still runs: (task id, the event that
    lets the handler return, the worker's run())."""
    release = asyncio.Event()

    async def handler(task):
        await release.wait()
        return "ok"

    tid = await queue.enqueue("t")
    worker = Worker(queue, grace_period=30)
    worker.register("t", handler)
    runner = asyncio.create_task(worker.run())
    while (await queue.get(tid)).status != TaskStatus.RUNNING:
        await asyncio.sleep(0.01)
    worker.stop()
    return tid, release, runner


async def test_final_flush_is_retried_within_the_grace_period(queue):
    tid, release, runner = await _stopped_while_its_handler_runs(queue)
    # Every trip that writes finish records and claims nothing (the final flush) fails 3 times.
    calls = failing_cycle(queue, 3, QueueBusy, when=lambda finishes, claim, recover: bool(finishes) and not recover)
    release.set()
    await asyncio.wait_for(runner, 30)
    assert calls["failed"] == 3
    assert (await queue.get(tid)).status == TaskStatus.COMPLETED


async def test_final_flush_waits_out_a_real_write_lock(db_path):
    """A real fault on SQLite: the write lock is held past busy_timeout while the worker shuts down."""
    from prismq_queue import Queue

    async with Queue(db_path, busy_timeout=0.1) as queue:
        tid, release, runner = await _stopped_while_its_handler_runs(queue)
        await asyncio.sleep(0.2)  # the work loop has ended; shutdown waits for the handler
        locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        locker.execute("BEGIN IMMEDIATE")
        asyncio.get_running_loop().call_later(1.0, locker.execute, "COMMIT")
        release.set()
        await asyncio.wait_for(runner, 30)
        locker.close()
        assert (await queue.get(tid)).status == TaskStatus.COMPLETED


# -- 11. exceptions whose str() raises, and custom BaseExceptions -----------------------------------


class Unprintable(Exception):
    def __str__(self):
        raise RuntimeError("cannot print me")


class Custom(BaseException):
    pass


def test_error_text_has_a_placeholder_when_str_raises():
    from prismq_queue.worker import error_text

    assert error_text(ValueError("x")) == "ValueError: x"
    text = error_text(Unprintable())
    assert text.startswith("Unprintable: <") and "RuntimeError" in text


@pytest.mark.parametrize("exc_class", [Unprintable, Custom])
async def test_odd_exceptions_fail_the_attempt(queue, exc_class):
    async def handler(task):
        raise exc_class()

    def plain(task):
        raise exc_class()

    a = await queue.enqueue("async", max_attempts=1)
    p = await queue.enqueue("plain", max_attempts=1)
    worker = Worker(queue)
    worker.register("async", handler)
    worker.register("plain", plain)
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    for tid in (a, p):
        task = await queue.get(tid)
        assert task.status == TaskStatus.FAILED and task.error.startswith(exc_class.__name__)
    assert worker.failed == 2


# -- 14. cancelling the task that runs worker.run() -------------------------------------------------


async def test_cancelling_run_during_a_trip_never_strands_the_claimed_batch(queue):
    ids = await queue.enqueue_many([("t", i) for i in range(5)])
    real = queue.backend.cycle
    committed, proceed = asyncio.Event(), asyncio.Event()

    async def cycle(finishes, *, claim, recover, now):
        result = await real(finishes, claim=claim, recover=recover, now=now)
        if result.claimed and not committed.is_set():
            committed.set()  # the claim is committed; its answer is still on its way back
            await proceed.wait()
        return result

    queue.backend.cycle = cycle
    worker = Worker(queue, handle_signals=False)
    worker.register("t", lambda task: "ran")
    runner = asyncio.create_task(worker.run())
    await asyncio.wait_for(committed.wait(), 10)
    runner.cancel()
    await asyncio.sleep(0.05)
    proceed.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 30)
    # Released (attempt not counted) or run: never left 'running' under a lease nobody holds.
    for task in [await queue.get(i) for i in ids]:
        assert task.status in (TaskStatus.QUEUED, TaskStatus.COMPLETED)
        assert task.status == TaskStatus.COMPLETED or task.attempts == 0


async def test_cancelling_run_at_random_moments_leaves_nothing_running(queue):
    """A real race: cancel run() at varied moments of a busy drain; nothing stays 'running'."""
    for trial in range(10):
        await queue.enqueue_many([("t", i) for i in range(200)])
        worker = Worker(queue, concurrency=20, handle_signals=False, grace_period=5)
        worker.register("t", lambda task: None)
        runner = asyncio.create_task(worker.run())
        await asyncio.sleep(0.001 * trial)
        runner.cancel()
        try:
            await asyncio.wait_for(runner, 30)
        except asyncio.CancelledError:
            pass
        assert (await queue.stats())["by_status"]["running"] == 0, f"trial {trial}"


# -- 23. stop() before run(); SIGTERM reaches every Worker and the application's handler --------


async def test_stop_before_run_is_remembered(queue):
    tid = await queue.enqueue("t")
    worker = Worker(queue)
    worker.register("t", lambda task: None)
    worker.stop()
    await asyncio.wait_for(worker.run(), 10)  # returns at once, claiming nothing
    assert (await queue.get(tid)).status == TaskStatus.QUEUED
    await asyncio.wait_for(worker.run(until_empty=True), 10)  # the stop was spent: a new run works
    assert (await queue.get(tid)).status == TaskStatus.COMPLETED


async def test_sigterm_stops_every_worker_and_chains_the_previous_handler(db_path):
    from prismq_queue import Queue

    received = []

    def app_handler(signum, frame):
        received.append(signum)

    original = signal.signal(signal.SIGTERM, app_handler)
    try:
        async with Queue(db_path) as queue:
            workers = [Worker(queue, poll_interval=30) for _ in range(2)]
            runners = [asyncio.create_task(w.run()) for w in workers]
            await asyncio.sleep(0.3)
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.wait_for(asyncio.gather(*runners), 10)  # both stop
        assert received == [signal.SIGTERM]  # the application's handler still ran
        assert signal.getsignal(signal.SIGTERM) is app_handler  # and is back in place
    finally:
        signal.signal(signal.SIGTERM, original)
