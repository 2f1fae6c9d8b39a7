"""The change watcher: commits by another connection wake an armed worker, with no polling on Linux."""

import asyncio
import sqlite3
import sys

import pytest

from prismq_queue import Queue
from prismq_queue.backends.sqlite import Q
from prismq_queue.backends.sqlite_watcher import ChangeWatcher


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
        watcher = ChangeWatcher(db_path, Q["any_ready"], safety_interval=60)
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
        watcher = ChangeWatcher(db_path, Q["any_ready"], safety_interval=60)
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)  # committed before arming: the first look finds it
            assert await _woken(woke, 10)
        finally:
            watcher.stop()


async def test_disarmed_watcher_stays_quiet(db_path):
    async with Queue(db_path):
        watcher = ChangeWatcher(db_path, Q["any_ready"], safety_interval=60)
        try:
            woke = asyncio.Event()
            watcher.arm(woke.set)
            watcher.disarm(woke.set)
            _enqueue_raw(db_path)
            assert not await _woken(woke, 0.5)
        finally:
            watcher.stop()
