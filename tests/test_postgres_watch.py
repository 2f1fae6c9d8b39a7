"""PostgreSQL: an insert wakes one idle worker, not every one (no LISTEN/NOTIFY thundering herd).

Each Queue here is its own connection pair (work + LISTEN), as a separate process would
have; the workers count the round trips they make and the notifications their LISTEN
connections receive, which is what a stampede costs (each delivery wakes a server backend
and a client process, each round trip is a query).
"""

import asyncio
import contextlib

import pytest

from prismq_queue import Queue, Worker

pytest.importorskip("asyncpg", reason="the PostgreSQL backend needs asyncpg (pip install -e '.[test]')")


class _Idle:
    """A Worker on a Queue of its own, counting its backend's round trips (cycles)."""

    def __init__(self, location, concurrency, handler):
        self.queue = Queue(location)
        self.concurrency = concurrency
        self.handler = handler
        self.cycles = 0
        self.notifications = 0  # delivered to this Queue's LISTEN connection
        self.ran = []

    async def start(self):
        await self.queue.open()
        backend = self.queue.backend
        cycle = backend.cycle

        async def counting(*args, **kwargs):
            self.cycles += 1
            return await cycle(*args, **kwargs)

        backend.cycle = counting
        on_notify = backend._on_notify  # registered with the LISTEN connection when one is opened

        def counting_notify(*args):
            self.notifications += 1
            on_notify(*args)

        backend._on_notify = counting_notify
        self.worker = Worker(self.queue, concurrency=self.concurrency, poll_interval=30, handle_signals=False)

        async def run(task):
            self.ran.append(task.id)
            await self.handler(task)

        self.worker.register("t", run)
        self.runner = asyncio.ensure_future(self.worker.run())

    async def stop(self):
        self.worker.stop()
        await asyncio.wait_for(self.runner, 20)
        await self.queue.close()


async def _until(predicate, seconds=20):
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def _until_completed(queue, task_id):
    """Wait (2 s at most) until the task's completion is committed: the worker's next round trip."""
    for _ in range(2000):
        if (await queue.get(task_id)).status.value == "completed":
            return
        await asyncio.sleep(0.001)


async def _noop(task):
    return None


@contextlib.asynccontextmanager
async def _four_idle(pg_location):
    idle = [_Idle(pg_location, 50, _noop) for _ in range(4)]
    for w in idle:
        await w.start()
    try:
        await asyncio.sleep(0.5)  # every worker is waiting, every wait for the watch is in place
        yield idle
    finally:
        for w in idle:
            await w.stop()


async def _enqueue_one_at_a_time(pg_location, idle, n):
    """n single enqueues, each run by one of the idle workers before the next is made."""
    async with Queue(pg_location) as producer:
        for i in range(n):
            await producer.enqueue("t", i)
            assert await _until(lambda i=i: sum(len(w.ran) for w in idle) == i + 1), f"task {i} never ran"


async def test_single_enqueues_wake_one_idle_worker_not_all(pg_location):
    async with _four_idle(pg_location) as idle:
        before = sum(w.cycles for w in idle)
        n = 60
        await _enqueue_one_at_a_time(pg_location, idle, n)
        trips = sum(w.cycles for w in idle) - before
        # Each task takes a trip to claim it and one to acknowledge it (with the claim of the
        # next, often). Waking all four idle workers would add three empty claims per task.
        assert trips <= 3 * n, f"{trips} round trips for {n} tasks: idle workers were woken in vain"


async def test_single_enqueues_are_delivered_to_one_idle_process_not_all(pg_location):
    """Only the watch's holder LISTENs: n inserts are n notifications delivered in all, not 4n."""
    async with _four_idle(pg_location) as idle:
        assert await _until(lambda: sum(w.queue.backend._watching for w in idle) == 1), "nobody took the watch"
        before = sum(w.notifications for w in idle)
        n = 40
        await _enqueue_one_at_a_time(pg_location, idle, n)
        delivered = sum(w.notifications for w in idle) - before
        # One LISTENing session at a time (the holder UNLISTENs before it lets go): each
        # insert's notification reaches one process. Every process LISTENing made it 4n.
        assert delivered <= n, f"{delivered} notifications delivered for {n} inserts to 4 idle processes"


async def test_the_watch_passes_on_when_its_worker_is_full(pg_location):
    """A batch larger than one worker's slots reaches the other idle workers without a poll."""
    release = asyncio.Event()
    started = []

    async def hold(task):
        started.append(task.id)
        await release.wait()

    idle = [_Idle(pg_location, 1, hold) for _ in range(3)]
    for w in idle:
        await w.start()
    try:
        await asyncio.sleep(0.5)
        async with Queue(pg_location) as producer:
            await producer.enqueue_many([("t", i) for i in range(3)])  # one notification
        # poll_interval is 30 s: only the watch passing from full worker to idle worker starts them all
        assert await _until(lambda: len(started) == 3), f"only {len(started)} of 3 tasks started"
        assert sorted(len(w.ran) for w in idle) == [1, 1, 1]
    finally:
        release.set()
        for w in idle:
            await w.stop()


async def test_a_lost_watch_is_taken_over(pg_url, pg_location):
    """The holder's LISTEN session dies (its process was killed): the other idle worker takes the watch."""
    import asyncpg

    idle = [_Idle(pg_location, 50, _noop) for _ in range(2)]
    for w in idle:
        await w.start()
    try:
        await asyncio.sleep(0.5)
        holders = [w for w in idle if w.queue.backend._watching]
        assert len(holders) == 1
        holder, other = holders[0], [w for w in idle if w is not holders[0]][0]
        # Stop the holder as a killed process would stop: its session ends, nobody hands over.
        holder.worker.stop()
        await asyncio.wait_for(holder.runner, 20)
        listener = holder.queue.backend._listener
        conn = await asyncpg.connect(pg_url.split("?")[0])
        try:
            await conn.execute("SELECT pg_terminate_backend($1)", listener.get_server_pid())
        finally:
            await conn.close()
        await asyncio.sleep(0.3)
        async with Queue(pg_location) as producer:
            await producer.enqueue("t", "after")
        assert await _until(lambda: len(other.ran) == 1), "the remaining idle worker was not woken"
    finally:
        for w in idle:
            await w.stop()


async def test_a_cancelled_wait_for_the_watch_starts_again(pg_url, pg_location):
    """The server cancels a process's wait for the watch: it waits again, and still gets the watch."""
    import asyncpg

    idle = [_Idle(pg_location, 50, _noop) for _ in range(2)]
    for w in idle:
        await w.start()
    try:
        assert await _until(lambda: sum(w.queue.backend._watching for w in idle) == 1), "nobody took the watch"
        holder, waiter = sorted(idle, key=lambda w: not w.queue.backend._watching)
        await asyncio.sleep(0.3)  # the waiter's wait is under way in the server
        conn = await asyncpg.connect(pg_url.split("?")[0])
        try:
            assert await conn.fetchval("SELECT pg_cancel_backend($1)", waiter.queue.backend._listener.get_server_pid())
            await asyncio.sleep(0.5)
            # Now the holder goes as a killed process would (its session ends, no hand-over).
            holder.worker.stop()
            await asyncio.wait_for(holder.runner, 20)
            await conn.execute("SELECT pg_terminate_backend($1)", holder.queue.backend._listener.get_server_pid())
        finally:
            await conn.close()
        async with Queue(pg_location) as producer:
            await producer.enqueue("t", "after")
        # poll_interval is 30 s: only a waiter that waits again gets the watch and is woken
        assert await _until(lambda: len(waiter.ran) == 1), "the waiter whose wait was cancelled was not woken"
    finally:
        for w in idle:
            await w.stop()


# -- work arriving faster than a worker's round trips: gathered, not announced insert by insert


def _slow_trips(idle, seconds):
    """Make each round trip of `idle`'s worker last `seconds` longer, as on a loaded or distant server.

    The delay is inside the backend's call (its connection lock held), where a slow
    statement spends its time.
    """
    backend = idle.queue.backend
    inner = backend._cycle

    async def slow(conn, *args):
        await asyncio.sleep(seconds)
        return await inner(conn, *args)

    backend._cycle = slow


def _count_claims_with_work(idle):
    """Count the round trips of `idle`'s worker whose claim took at least one task."""
    idle.claims_with_work = 0
    backend = idle.queue.backend
    cycle = backend.cycle

    async def counting(*args, **kwargs):
        result = await cycle(*args, **kwargs)
        if result.claimed:
            idle.claims_with_work += 1
        return result

    backend.cycle = counting


async def test_work_arriving_during_a_round_trip_is_not_announced_insert_by_insert(pg_location):
    """While inserts come faster than the worker's round trips, the holder stops LISTENing and looks instead.

    Each delivered notification wakes a server backend and the client process: a
    process that only LISTENs halves the rate of single enqueues on two cores.
    """
    w = _Idle(pg_location, 50, _noop)
    await w.start()
    _slow_trips(w, 0.03)
    try:
        assert await _until(lambda: w.queue.backend._watching), "the idle worker never took the watch"
        n = 100
        async with Queue(pg_location) as producer:
            before = w.notifications
            for i in range(n):
                await producer.enqueue("t", i)  # one at a time, each awaited, not waiting for it to run
        assert await _until(lambda: len(w.ran) == n), f"only {len(w.ran)} of {n} tasks ran"
        delivered = w.notifications - before
        # The first inserts are announced; once one comes while the worker is busy with its trip,
        # the holder UNLISTENs and the worker gathers the rest by looking. LISTENing throughout: n.
        assert delivered <= n // 4, f"{delivered} notifications delivered for {n} inserts"
    finally:
        await w.stop()


async def test_a_claim_while_work_arrives_takes_what_gathered(pg_location, monkeypatch):
    """While work arrives one task at a time, claims come at most once per gathering delay, each taking all."""
    from prismq_queue.backends import postgres

    monkeypatch.setattr(postgres, "GATHER_DELAY", 2.0, raising=False)  # long enough for the whole stream on a loaded machine
    w = _Idle(pg_location, 50, _noop)
    await w.start()
    _slow_trips(w, 0.05)
    _count_claims_with_work(w)
    try:
        assert await _until(lambda: w.queue.backend._watching), "the idle worker never took the watch"
        n = 40
        async with Queue(pg_location) as producer:
            for i in range(n):
                await producer.enqueue("t", i)
                await asyncio.sleep(0.01)  # a task every 10 ms or more: slower than no round trip here
        assert await _until(lambda: len(w.ran) == n), f"only {len(w.ran)} of {n} tasks ran"
        # The first task is claimed as soon as it is announced, the rest gathered: a claim or two
        # for the other 39. Claiming as they come takes one claim per 50 ms trip, 8 or more.
        assert w.claims_with_work <= 3, f"{w.claims_with_work} claims for {n} tasks arriving one at a time"
    finally:
        await w.stop()


async def test_work_committed_just_before_listening_again_is_found(pg_location, monkeypatch):
    """The holder LISTENs again once looks find nothing; a task committed just before that LISTEN still runs."""
    import asyncpg

    w = _Idle(pg_location, 50, _noop)
    await w.start()
    _slow_trips(w, 0.03)
    backend = w.queue.backend
    try:
        assert await _until(lambda: backend._watching), "the idle worker never took the watch"
        listener = backend._listener
        real_add = asyncpg.Connection.add_listener
        relisten = []

        async def add_listener(conn, channel, callback):
            if conn is listener and not relisten:
                # The looks found nothing, so the holder LISTENs again: commit a task first,
                # after its last claim and before the LISTEN, so that no notification announces it.
                async with Queue(pg_location) as late:
                    relisten.append(await late.enqueue("t", "late"))
            return await real_add(conn, channel, callback)

        monkeypatch.setattr(asyncpg.Connection, "add_listener", add_listener)
        n = 20
        async with Queue(pg_location) as producer:
            for i in range(n):
                await producer.enqueue("t", i)
        # poll_interval is 30 s: only the look after LISTENing again runs the late task
        assert await _until(lambda: len(w.ran) == n + len(relisten) and relisten), \
            f"{len(w.ran)} tasks ran; LISTENed again: {bool(relisten)}"
    finally:
        await w.stop()


# -- the completion trip: the common round trip, in a statement of its own


async def test_a_round_trip_of_completions_runs_no_retry_fail_or_release_update(pg_location, monkeypatch):
    """Completions and a claim in one statement that plans no retry, fail or release UPDATE.

    Every UPDATE of a statement costs the server its set-up on each execution, rows
    or none: measured here, the four-kind statement costs ~0.9 ms of server CPU for a
    round trip of one completion, the completions-only one ~0.45 ms. A worker busy
    with single enqueues sends one such trip per batch. Fencing stays as it is.
    """
    import dataclasses

    import asyncpg

    async with Queue(pg_location) as q:
        await q.enqueue_many([("t", i) for i in range(3)])
        tasks = (await q.round_trip([], q.claim_request("w", 3, "priority", 30))).tasks
        stale = dataclasses.replace(tasks[2], token=tasks[2].token + 1)  # a holder whose lease was lost
        work = q.backend._conn
        sent = []
        real_fetch = asyncpg.Connection.fetch

        async def recording(conn, query, *args, **kwargs):
            if conn is work:
                sent.append(query)
            return await real_fetch(conn, query, *args, **kwargs)

        monkeypatch.setattr(asyncpg.Connection, "fetch", recording)
        finishes = [q.complete_record(task, None) for task in (tasks[0], tasks[1], stale)]
        result = await q.round_trip(finishes, q.claim_request("w", 3, "priority", 30))
        monkeypatch.undo()
        updates = [query for query in sent if "UPDATE" in query]
        assert updates, "the round trip sent no UPDATE"
        # "cycle"'s retry and fail UPDATEs set the error; its release UPDATE gives an attempt back
        assert not any("error = f.value" in query or "attempts - 1" in query for query in updates), \
            "a round trip of completions planned the retry, fail and release UPDATEs too"
        assert [(await q.get(t.id)).status.value for t in tasks] == ["completed", "completed", "running"]
        assert result.outcomes == ["ok", "ok", "lost"]


# -- a light load (a task at a time, more than a round trip apart) is never gathered


def _count_unlistens(monkeypatch, backend):
    """Count the UNLISTENs sent on `backend`'s LISTEN connection (the holder stops LISTENing to gather)."""
    import asyncpg

    unlistens = []
    real_remove = asyncpg.Connection.remove_listener

    async def remove_listener(conn, channel, callback):
        if conn is backend._listener:
            unlistens.append(channel)
        return await real_remove(conn, channel, callback)

    monkeypatch.setattr(asyncpg.Connection, "remove_listener", remove_listener)
    return unlistens


async def test_a_light_load_through_the_workers_queue_is_claimed_at_once_not_gathered(pg_location, monkeypatch):
    """One task at a time, enqueued through the worker's own Queue: the local wake-up claims it, no gathering.

    The enqueue wakes the idle worker at once, so the insert's notification reaches the
    holder while that worker's claim is under way. That is no stream (the next task comes
    more than a round trip later), and the holder must keep LISTENing: once it gathered,
    every task of such a load waited for the next look (GATHER_DELAY) before its claim.
    """
    done = asyncio.Event()

    async def finished(task):
        done.set()

    w = _Idle(pg_location, 50, finished)  # its Queue is the producer too: the same-process path
    await w.start()
    _count_claims_with_work(w)
    backend = w.queue.backend
    try:
        assert await _until(lambda: backend._watching), "the idle worker never took the watch"
        unlistens = _count_unlistens(monkeypatch, backend)
        claims_before = w.claims_with_work
        n = 30
        async with Queue(pg_location) as observer:
            for i in range(n):
                done.clear()
                tid = await w.queue.enqueue("t", i)
                await asyncio.wait_for(done.wait(), 20)
                # its completion committed (the worker's next round trip), then a pause:
                # the next task comes well over a round trip after this one
                await _until_completed(observer, tid)
                await asyncio.sleep(0.005)
        assert unlistens == [], f"the holder stopped LISTENing {len(unlistens)} times under a light load"
        assert not backend._gather.arriving
        # each task claimed by a claim of its own, as soon as it was announced
        assert w.claims_with_work - claims_before == n
    finally:
        await w.stop()


async def test_a_light_load_from_another_process_is_announced_task_by_task(pg_location, monkeypatch):
    """One task at a time from another Queue (as another process): each announced and claimed, never gathered."""
    w = _Idle(pg_location, 50, _noop)
    await w.start()
    backend = w.queue.backend
    try:
        assert await _until(lambda: backend._watching), "the idle worker never took the watch"
        unlistens = _count_unlistens(monkeypatch, backend)
        before = w.notifications
        n = 30
        async with Queue(pg_location) as producer:
            for i in range(n):
                tid = await producer.enqueue("t", i)
                assert await _until(lambda i=i: len(w.ran) == i + 1), f"task {i} never ran"
                await _until_completed(producer, tid)
                await asyncio.sleep(0.005)
        assert unlistens == [], f"the holder stopped LISTENing {len(unlistens)} times under a light load"
        assert w.notifications - before == n  # every insert announced, none gathered unannounced
    finally:
        await w.stop()


async def test_a_claim_that_finds_two_inserts_starts_gathering_one_batch_does_not(pg_location):
    """A short claim finding tasks of two inserts shows a stream; one enqueue_many batch is one insert.

    No worker waits here, and the inserts are far apart (no two notifications within a
    round trip): only what the claims find decides.
    """
    async with Queue(pg_location) as q, Queue(pg_location) as producer:
        backend = q.backend
        def wake():
            pass

        backend.arm(wake)  # a worker waits (it keeps the watch here): this process takes the watch
        assert await _until(lambda: backend._watching), "nobody took the watch"
        await q.claim("w", limit=50)  # measures a claim's round trip
        await producer.enqueue_many([("t", i) for i in range(5)])  # one insert, one notification
        await asyncio.sleep(0.1)
        assert len(await q.claim("w", limit=50)) == 5
        assert not backend._gather.arriving, "one enqueue_many batch was taken for a stream"
        await producer.enqueue("t", "a")
        await asyncio.sleep(0.1)
        await producer.enqueue("t", "b")
        await asyncio.sleep(0.1)
        assert len(await q.claim("w", limit=50)) == 2
        assert backend._gather.arriving, "a claim found two inserts and the holder kept LISTENing"
        backend.disarm(wake)


# -- the watch stays with a holder whose workers keep claiming


async def test_the_holder_keeps_the_watch_while_its_workers_claim(pg_location, monkeypatch):
    """No worker of the holder waits for work, but they claim every few ms (busy with a stream): keep the watch.

    A worker busy with a stream goes from round trip to round trip (its handlers finish
    during each trip); between two trips none waits and no trip is under way. Handing
    the watch on in such a gap sent every later insert to another process while this
    one was still claiming.
    """
    from prismq_queue.backends import postgres

    # Long enough that a loaded machine's scheduling never spaces two claims this far apart.
    monkeypatch.setattr(postgres, "HANDOVER_DELAY", 0.25)
    async with Queue(pg_location) as q:
        backend = q.backend

        def wake():
            pass

        backend.arm(wake)
        assert await _until(lambda: backend._watching), "nobody took the watch"
        backend.disarm(wake)  # the worker goes to work; from here on it only claims
        # Claims for ten hand-over delays, a few ms apart: no trip under way most of the time.
        loop = asyncio.get_running_loop()
        until = loop.time() + 10 * postgres.HANDOVER_DELAY
        while loop.time() < until:
            await q.claim("w", limit=50)
            await asyncio.sleep(0.01)
            assert backend._watching, "the holder handed the watch on while its worker kept claiming"
        # it stops claiming (all its slots busy, say): the watch passes on
        assert await _until(lambda: not backend._watching, 5), "the holder kept the watch without claiming"


async def test_one_slow_round_trip_does_not_hold_a_streams_first_look_back(pg_location):
    """The first look of a stream comes two claim round trips after it showed, but GATHER_DELAY at most.

    A round trip measured slow once (the process paused, say) must not keep a stream's
    tasks waiting longer than a look's usual delay.
    """
    from prismq_queue.backends import postgres

    async with Queue(pg_location) as q, Queue(pg_location) as producer:
        backend = q.backend
        woken = []
        backend.arm(lambda: woken.append(1))  # a worker waits: this process takes the watch
        assert await _until(lambda: backend._watching), "nobody took the watch"
        inner = backend._cycle

        async def slow_once(conn, *args):
            backend._cycle = inner
            await asyncio.sleep(0.5)
            return await inner(conn, *args)

        backend._cycle = slow_once
        await q.claim("w", limit=50)  # the one round trip measured so far: half a second
        assert backend._gather.trip >= 0.5
        await producer.enqueue("t", 1)
        await producer.enqueue("t", 2)  # two notifications within one (measured) round trip: a stream
        assert await _until(lambda: backend._gather.arriving), "two quick inserts did not start gathering"
        gather = backend._gather
        # (1e-6: look_at is since + GATHER_DELAY in floating point, and the difference can
        # come back a few ulps above it; the old code's first look was 1.05 s after the stream)
        assert gather.look_at - gather.since <= postgres.GATHER_DELAY + 1e-6, \
            f"the first look is due {gather.look_at - gather.since:.3f} s after the stream showed"
