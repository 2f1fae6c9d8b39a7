"""The change watcher: commits by another connection wake an armed worker, with no polling on Linux."""

import asyncio
import sqlite3
import sys
import threading

import pytest

from prismq_queue import Queue
from prismq_queue.backends.sqlite import Q
from prismq_queue.backends.sqlite_watcher import ChangeWatcher, FineTimer

from helpers import statements_run


def _enqueue_raw(db_path):
    """Commit a due task through a plain sqlite3 connection, as another process would."""
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("INSERT INTO prismq_tasks (type, payload, priority, status, run_at, max_attempts, created_at) "
                 "VALUES ('t', 'null', 100, 'queued', 0, 5, 0)")
    conn.close()


async def _woken(event, seconds):
    try:
        await asyncio.wait_for(event.wait(), seconds)
        return True
    except asyncio.TimeoutError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")
async def test_commit_elsewhere_wakes_through_inotify(db_path):
    async with Queue(db_path):  # holds the file open, as a running worker would
        # A 60 s safety interval: only the WAL write event can wake it within the test's wait.
        watcher = ChangeWatcher(db_path, Q["look"], safety_interval=60)
        try:
            assert watcher.event_driven
            woke = asyncio.Event()
            watcher.arm(woke.set)
            assert not await _woken(woke, 0.3)  # nothing ready: no wake-up
            _enqueue_raw(db_path)
            assert await _woken(woke, 10)
        finally:
            watcher.stop()


async def test_armed_watcher_sees_work_that_was_already_there(db_path):
    async with Queue(db_path):
        _enqueue_raw(db_path)
        watcher = ChangeWatcher(db_path, Q["look"], safety_interval=60)
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)  # committed before arming: the first look finds it
            assert await _woken(woke, 10)
        finally:
            watcher.stop()


async def test_disarmed_watcher_stays_quiet(db_path):
    async with Queue(db_path):
        watcher = ChangeWatcher(db_path, Q["look"], safety_interval=60)
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)
            watcher.disarm(woke.set)
            _enqueue_raw(db_path)
            assert not await _woken(woke, 0.5)
        finally:
            watcher.stop()


# -- the claim of a worker woken by another process's commit ---------------------------------


async def test_a_claim_with_no_expired_lease_runs_no_recovering_update(db_path):
    async with Queue(db_path) as q:
        await q.enqueue_many([("t", i) for i in range(3)])
        held = await q.claim("other", limit=1)  # a lease that has not expired
        async with statements_run(q) as statements:
            trip = await q.round_trip((), q.claim_request("w", 5), recover=True)
        assert [t.payload for t in trip.tasks] == [1, 2]
        # One seek for the earliest lease end instead of the two recovering UPDATEs.
        assert not [sql for sql in statements if sql.lstrip().startswith("UPDATE") and "lease_until <" in sql]
        assert trip.next_expiry == held[0].lease_until


async def test_a_claim_that_comes_up_short_reads_both_next_moments_in_one_statement(db_path):
    async with Queue(db_path) as q:
        await q.enqueue("t", "due")
        later = await q.enqueue("t", "later", delay=3600)
        async with statements_run(q) as statements:
            trip = await q.round_trip((), q.claim_request("w", 5), recover=True)
        assert [t.payload for t in trip.tasks] == ["due"]
        assert trip.next_due == (await q.get(later)).run_at
        assert trip.next_expiry == trip.tasks[0].lease_until
        # After the claim: COMMIT, and before it one statement for both moments.
        commit = len(statements) - 1
        assert statements[commit] == "COMMIT"
        assert "MIN(run_at)" in statements[commit - 1] and "MIN(lease_until)" in statements[commit - 1]


async def test_a_short_trip_that_finds_expired_leases_recovers_them_on_the_bridge_thread(db_path):
    # Recovering may touch any number of rows: never on the loop's thread. The trip
    # starts there (one finish, a small claim), finds the expired lease inside its
    # transaction, rolls back and goes to the bridge's thread, which does it all once.
    async with Queue(db_path) as q:
        done_id, lost_id = await q.enqueue("t", "done"), await q.enqueue("t", "lost")
        (done,) = await q.claim("w", limit=1)
        (lost,) = await q.claim("dead", limit=1, lease_seconds=0.01)
        await asyncio.sleep(0.05)
        bridge = q._backend._bridge
        hops = []
        run = bridge.run
        bridge.run = lambda fn, *args: hops.append(fn) or run(fn, *args)
        try:
            trip = await q.round_trip([q.complete_record(done, "ok")], q.claim_request("w", 5), recover=True)
        finally:
            bridge.run = run
        assert len(hops) == 1
        assert trip.outcomes is None and trip.recovered == 1
        assert [(t.id, t.attempts) for t in trip.tasks] == [(lost_id, 2)]
        assert (await q.get(done_id)).status.value == "completed"


async def test_an_expired_lease_is_still_recovered_by_a_claim(db_path):
    async with Queue(db_path) as q:
        task_id = await q.enqueue("t", "x")
        (task,) = await q.claim("dead", limit=1, lease_seconds=0.01)
        await asyncio.sleep(0.05)
        trip = await q.round_trip((), q.claim_request("w", 5), recover=True)
        assert trip.recovered == 1
        assert [(t.id, t.worker_id) for t in trip.tasks] == [(task_id, "w")]



def _missing_looks(watcher, misses):
    """Make the watcher's first `misses` looks find nothing, as if the commit were not published yet;
    the list of looks made, which grows with each."""
    looks = []
    look = watcher._look

    def counted(fresh=False):
        looks.append(fresh)
        return look(fresh) if len(looks) > misses else False

    watcher._look = counted
    return looks


async def test_a_look_that_saw_no_commit_yet_looks_again_at_the_next_loop_round(db_path, monkeypatch):
    # A WAL write event may come before its commit is published in the shared index.
    # The next look must not wait for a timer: the loop sleeps in whole milliseconds,
    # so a 0.1 ms timer fired 1 ms later. (The loop's clock stands still here, so no
    # timer can come due: only a look of the next round counts.)
    async with Queue(db_path):
        watcher = ChangeWatcher(db_path, Q["look"], safety_interval=60)
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)
            await asyncio.sleep(0.05)  # the first look, at arming
            looks = _missing_looks(watcher, 1)  # the first finds nothing yet
            _enqueue_raw(db_path)
            loop = asyncio.get_running_loop()
            frozen = loop.time()
            monkeypatch.setattr(loop, "time", lambda: frozen)
            watcher._on_event()
            assert len(looks) == 1
            await asyncio.sleep(0)  # one loop round
            monkeypatch.undo()
            assert len(looks) == 2
            assert woke.is_set()
        finally:
            watcher.stop()


# -- the fine timer: settle looks sooner than the loop's millisecond ----------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_fine_timer_fires_once_per_start_and_not_after_cancel():
    loop = asyncio.get_running_loop()
    fired = []
    ring = asyncio.Event()
    timer = FineTimer.create(loop, lambda: (fired.append(1), ring.set()))
    assert timer is not None
    try:
        timer.start(0.0002)
        assert await _woken(ring, 5)
        await asyncio.sleep(0.02)
        assert len(fired) == 1  # one-shot
        timer.start(0.0002)
        timer.cancel()
        await asyncio.sleep(0.05)
        assert len(fired) == 1  # cancelled before it was due
        ring.clear()
        timer.start(0.0002)  # usable again
        assert await _woken(ring, 5)
        assert len(fired) == 2
    finally:
        timer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify and timerfd are Linux's")
async def test_a_settle_look_after_two_misses_comes_from_the_fine_timer(db_path, monkeypatch):
    # After a look and the next round's look both missed the commit, the next comes
    # 0.1 ms later: on the loop's own timers it would come 1 ms later (they fire on
    # whole milliseconds). With the loop's clock frozen no loop timer can come due,
    # so only the fine timer can bring that third look.
    async with Queue(db_path):
        watcher = ChangeWatcher(db_path, Q["look"], safety_interval=60)
        loop = asyncio.get_running_loop()
        watchdog = threading.Timer(10, lambda: loop.call_soon_threadsafe(woke.set))
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)
            await asyncio.sleep(0.05)  # the first look, at arming
            looks = _missing_looks(watcher, 2)  # the first two find nothing yet
            _enqueue_raw(db_path)
            frozen = loop.time()
            monkeypatch.setattr(loop, "time", lambda: frozen)
            watcher._on_event()
            await asyncio.sleep(0)  # the next round's look: a miss too
            assert len(looks) == 2
            assert isinstance(watcher._timer, FineTimer)
            watchdog.start()
            await woke.wait()
            monkeypatch.undo()
            assert len(looks) == 3  # (the watchdog's wake-up would leave it at 2)
        finally:
            watchdog.cancel()
            watcher.stop()
