"""Worker behaviour in one process: handlers, retries, unknown types, wake-ups, leases, shutdown."""

import asyncio
import threading

import pytest

from prismq_queue import InvalidArgument, Queue, RetryPolicy, Strategy, TaskStatus, Worker

from helpers import insert_due_task


async def test_drains_everything_with_async_and_plain_handlers(queue):
    seen = []

    async def double(task):
        seen.append(task.id)
        return task.payload * 2

    def shout(task):  # plain def: runs in a thread
        assert threading.current_thread() is not threading.main_thread()
        return task.payload.upper()

    a = await queue.enqueue_many([("double", i) for i in range(200)])
    b = await queue.enqueue("shout", "hi")
    worker = Worker(queue, concurrency=7)
    worker.register("double", double)
    worker.register("shout", shout)
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    assert sorted(seen) == a and worker.completed == 201
    assert (await queue.get(a[5])).result == 10 and (await queue.get(b)).result == "HI"
    assert (await queue.stats())["by_status"]["completed"] == 201


async def test_never_runs_more_than_concurrency_at_once(queue):
    running = peak = 0

    async def slow(task):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1

    await queue.enqueue_many([("slow", None)] * 40)
    worker = Worker(queue, concurrency=4)
    worker.register("slow", slow)
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    assert peak == 4 and worker.completed == 40


async def test_handler_exception_retries_per_policy_then_dead_letters(queue):
    calls = 0

    async def boom(task):
        nonlocal calls
        calls += 1
        raise RuntimeError(f"attempt {task.attempts}")

    worker = Worker(queue, concurrency=2)
    worker.register("boom", boom, retry=RetryPolicy(max_attempts=3, base_delay=0.01, jitter=0))
    tid = await queue.enqueue("boom")  # max_attempts comes from the type's policy at enqueue time
    await asyncio.wait_for(_run_until(worker, queue, tid), 30)
    task = await queue.get(tid)
    assert calls == 3 and task.status == TaskStatus.FAILED and task.attempts == 3
    assert task.error == "RuntimeError: attempt 3"
    assert worker.retried == 2 and worker.failed == 1


async def _run_until(worker, queue, tid):
    """Run the worker until task `tid` is finished (its retries are delayed, so until_empty would stop early)."""
    runner = asyncio.create_task(worker.run())
    while not (await queue.get(tid)).status.finished:
        await asyncio.sleep(0.01)
    worker.stop()
    await runner


async def test_unknown_type_fails_without_retry_and_worker_goes_on(queue):
    bad = await queue.enqueue("mystery", max_attempts=5)
    good = await queue.enqueue("known")
    worker = Worker(queue)
    worker.register("known", lambda task: "ok")
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    task = await queue.get(bad)
    assert task.status == TaskStatus.FAILED and "no handler registered" in task.error and task.attempts == 1
    assert (await queue.get(good)).status == TaskStatus.COMPLETED


async def test_unserializable_result_fails_the_task(queue):
    tid = await queue.enqueue("t")
    worker = Worker(queue)
    worker.register("t", lambda task: object())
    await asyncio.wait_for(worker.run(until_empty=True), 30)
    task = await queue.get(tid)
    assert task.status == TaskStatus.FAILED and "JSON" in task.error


async def test_enqueue_wakes_an_idle_worker_at_once(queue):
    started = asyncio.Event()
    worker = Worker(queue, poll_interval=30)  # a poll would take 30 s: only the wake-up can start it
    worker.register("t", lambda task: started.set())
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    await queue.enqueue("t")
    await asyncio.wait_for(started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(runner, 10)


async def _enqueue_on_another_queue(location):
    async with Queue(location) as other:  # a separate connection, as another process would have
        await other.enqueue("t")


@pytest.mark.parametrize("produce", [_enqueue_on_another_queue, insert_due_task], ids=["queue", "plain_sql"])
async def test_another_connection_wakes_an_idle_worker(location, queue, produce):
    # Plain SQL, no Queue at all: what wakes the worker is then the database's own signal.
    started = asyncio.Event()
    worker = Worker(queue, poll_interval=30)
    worker.register("t", lambda task: started.set())
    runner = asyncio.create_task(worker.run())
    await asyncio.sleep(0.1)
    await produce(location)
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(runner, 10)


async def test_delayed_task_runs_when_due(queue):
    done = asyncio.Event()
    worker = Worker(queue, poll_interval=30)
    worker.register("t", lambda task: done.set())
    runner = asyncio.create_task(worker.run())
    await queue.enqueue("t", delay=0.2)
    await asyncio.wait_for(done.wait(), 5)
    worker.stop()
    await runner


async def test_heartbeat_extends_leases_of_long_handlers(queue):
    async def slow(task):
        await asyncio.sleep(3.0)
        return "done"

    tid = await queue.enqueue("slow")
    # Heartbeats every 0.1 s keep a 1 s lease: a loaded machine may delay a few.
    worker = Worker(queue, lease_seconds=1.0, heartbeat_interval=0.1)
    worker.register("slow", slow)
    runner = asyncio.create_task(worker.run(until_empty=True))
    await asyncio.sleep(2.0)  # twice the first lease: only heartbeats keep it
    assert await queue.claim("thief") == []
    await asyncio.wait_for(runner, 10)
    task = await queue.get(tid)
    assert task.status == TaskStatus.COMPLETED and task.attempts == 1 and worker.refused == 0


async def test_cancel_reaches_a_running_handler(queue):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def long(task):
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    tid = await queue.enqueue("long")
    worker = Worker(queue, lease_seconds=0.3, heartbeat_interval=0.05)
    worker.register("long", long)
    runner = asyncio.create_task(worker.run(until_empty=True))
    await asyncio.wait_for(started.wait(), 5)
    assert await queue.cancel(tid)
    await asyncio.wait_for(cancelled.wait(), 5)
    await asyncio.wait_for(runner, 10)
    assert (await queue.get(tid)).status == TaskStatus.CANCELLED


async def test_graceful_stop_finishes_or_releases(queue):
    quick_done, started = asyncio.Event(), []

    async def quick(task):
        started.append(task.id)
        await asyncio.sleep(0.05)
        quick_done.set()

    async def stuck(task):
        started.append(task.id)
        await asyncio.sleep(60)

    q1 = await queue.enqueue("quick", priority=1)
    s1 = await queue.enqueue("stuck", priority=2)
    worker = Worker(queue, concurrency=2, grace_period=1.0)
    worker.register("quick", quick)
    worker.register("stuck", stuck)
    runner = asyncio.create_task(worker.run())
    while len(started) < 2:  # stop once both run (a stop before the claim returns hands both back)
        await asyncio.sleep(0.01)
    worker.stop()
    await asyncio.wait_for(runner, 10)
    assert (await queue.get(q1)).status == TaskStatus.COMPLETED
    released = await queue.get(s1)
    assert released.status == TaskStatus.QUEUED and released.attempts == 0  # handed back, attempt not counted


async def test_strategy_is_used_by_the_worker(queue):
    order = []
    await queue.enqueue_many([("t", i, {"priority": 100 - i}) for i in range(5)])
    worker = Worker(queue, concurrency=1, strategy=Strategy.FIFO)
    worker.register("t", lambda task: order.append(task.payload))
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert order == [0, 1, 2, 3, 4]


def test_bad_worker_arguments(db_path):
    q = Queue(db_path)
    for kwargs in ({"concurrency": 0}, {"concurrency": 2.5}, {"lease_seconds": 0}, {"strategy": "best"}):
        with pytest.raises(InvalidArgument):
            Worker(q, **kwargs)
    with pytest.raises(InvalidArgument):
        Worker(q).register("t", "not callable")
    with pytest.raises(InvalidArgument):
        Worker(object())


async def test_register_as_decorator(queue):
    worker = Worker(queue)

    @worker.register("t")
    async def handler(task):
        return "decorated"

    tid = await queue.enqueue("t")
    await asyncio.wait_for(worker.run(until_empty=True), 10)
    assert (await queue.get(tid)).result == "decorated" and callable(handler)
