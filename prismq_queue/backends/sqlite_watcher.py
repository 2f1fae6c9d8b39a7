"""Notices commits made by other processes to a SQLite file, without taking any lock.

`PRAGMA data_version` changes when another connection commits; reading it
takes no lock. What remains is *when* to read it. On Linux the watcher asks the
event loop to watch an inotify descriptor on the WAL file, which every commit
writes to: an idle worker costs nothing until a commit happens and sees it at
once, and, as everything runs on the loop's own thread, no second thread
competes for the GIL with the worker. Elsewhere (or without inotify) it looks
every millisecond while armed, a few percent of a core.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import sqlite3
import time
from functools import cache
from typing import Callable, Optional, Union

_IN_MODIFY = 0x00000002
_CLOCK_MONOTONIC = 1
SETTLE = 0.02  # how long to keep looking after a WAL write that was not visible yet
LOOP_RESOLUTION = 0.001  # the event loop's timers come due in whole milliseconds (epoll)


@cache
def _libc() -> Optional[ctypes.CDLL]:
    """The C library, loaded once a process: find_library runs ldconfig (milliseconds, on the loop's thread)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    except OSError:
        return None


def _inotify_fd(wal_path: str) -> Optional[int]:
    """A non-blocking inotify descriptor watching writes to `wal_path`, or None where there is none."""
    libc = _libc()
    if libc is None:
        return None
    try:
        fd = libc.inotify_init1(os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except AttributeError:
        return None  # not Linux
    if fd < 0:
        return None
    if libc.inotify_add_watch(fd, os.fsencode(wal_path), _IN_MODIFY) < 0:
        os.close(fd)
        return None
    return fd


class FineTimer:
    """A one-shot timer good to a few microseconds: a Linux timerfd that the event loop watches.

    The loop's own timers fire on whole milliseconds (it sleeps in epoll, whose timeout
    is in milliseconds, rounded up), so call_later(0.0001) runs about 1 ms later. A look
    that must come back 0.1 ms after a write needs this. create() returns None where
    there is no timerfd; the caller then falls back to call_later.
    """

    def __init__(self, libc: ctypes.CDLL, fd: int, loop: asyncio.AbstractEventLoop,
                 callback: Callable[[], None]) -> None:
        self._libc, self._fd, self._loop, self._callback = libc, fd, loop, callback
        self._armed = False
        loop.add_reader(fd, self._on_ready)

    @classmethod
    def create(cls, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> "Optional[FineTimer]":
        libc = _libc()
        if libc is None:
            return None
        try:
            fd = libc.timerfd_create(_CLOCK_MONOTONIC, os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        except AttributeError:
            return None  # not Linux
        return cls(libc, fd, loop, callback) if fd >= 0 else None

    def start(self, delay: float) -> None:
        """Call the callback once, `delay` seconds from now (replacing a start not yet due)."""
        ns = max(int(delay * 1e9), 1)  # 0 would disarm it
        self._set(ns // 1_000_000_000, ns % 1_000_000_000)
        self._armed = True

    def cancel(self) -> None:
        if self._armed:
            self._armed = False
            self._set(0, 0)  # disarmed; a pending expiry is dropped with it (the count resets)

    def close(self) -> None:
        self.cancel()
        if not self._loop.is_closed():
            self._loop.remove_reader(self._fd)
        os.close(self._fd)

    def _set(self, sec: int, nsec: int) -> None:
        # struct itimerspec {it_interval, it_value}: a zero interval makes it one-shot.
        spec = (ctypes.c_long * 4)(0, 0, sec, nsec)
        self._libc.timerfd_settime(self._fd, 0, ctypes.byref(spec), None)

    def _on_ready(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            return  # cancelled or started again after it fired: not due any more
        if self._armed:
            self._armed = False
            self._callback()


class ChangeWatcher:
    """Calls the armed wake-ups, on the event loop, when ready work may have appeared."""

    def __init__(self, path: str, look_sql: str, interval: float = 0.001, safety_interval: float = 0.25,
                 local_write: Callable[[], bool] = lambda: False,
                 local_inserts: Callable[[], int] = lambda: 0,
                 outside_version: Callable[[], Optional[int]] = lambda: None) -> None:
        self._local_write = local_write
        # How many inserts this process has committed (each woke this process's workers
        # as it returned), and the data_version of this process's own connection (it
        # changes only when *another* connection commits; None when it cannot be read now).
        self._local_inserts = local_inserts
        self._outside_version = outside_version
        self._inserts_seen = 0
        self._outside_seen: Optional[int] = None
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        self._look_sql = look_sql  # (data_version, is a task due?) for a moment: Q['look']
        self._fd = _inotify_fd(path + "-wal")
        # Without events, look every interval; with them, only as a safety net.
        self._period = safety_interval if self._fd is not None else interval
        self._wakes: set[Callable[[], None]] = set()
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        # The next look of the timer (or of a settle): a loop timer, or the fine timer
        # for a look sooner than the loop's millisecond can place it.
        self._timer: Optional[Union[asyncio.Handle, FineTimer]] = None
        self._fine: Optional[FineTimer] = None
        self._fresh: Optional[asyncio.Handle] = None  # the look arm() asked for, not made yet
        self._last: Optional[int] = None
        self._settle_until = 0.0
        self._pause = 0.0  # the settle's pause before its next look (see _on_event)

    @property
    def event_driven(self) -> bool:
        return self._fd is not None

    def arm(self, wake: Callable[[], None]) -> None:
        """Start calling `wake`; must be called on the running event loop's thread."""
        first = not self._wakes
        self._wakes.add(wake)
        if self._loop is None:
            # The reader stays registered until stop(): adding and removing it at
            # every idle period would cost two system calls each time.
            self._loop = asyncio.get_running_loop()
            if self._fd is not None:
                self._loop.add_reader(self._fd, self._on_event)
                self._fine = FineTimer.create(self._loop, self._on_timer)
        if first and self._timer is None:
            self._schedule(self._period)
        # Work committed between the worker's last claim and now must not wait
        # for the next change: look once, soon. Not right here: a worker arms just
        # after starting the handlers it claimed, and they should not wait for it.
        if self._fresh is None:
            self._fresh = self._loop.call_soon(self._look_fresh)

    def disarm(self, wake: Callable[[], None]) -> None:
        self._wakes.discard(wake)
        if not self._wakes:
            # The period's timer stays: firing with nobody armed it does nothing, and
            # a worker arms again soon, often within the period. Replacing it at each
            # arm made two loop timers a task for a worker taking tasks one by one.
            if self._settle_until and self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._settle_until = 0.0
            if self._fresh is not None:
                self._fresh.cancel()
                self._fresh = None

    def stop(self) -> None:
        for wake in list(self._wakes):
            self.disarm(wake)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fine is not None:
            self._fine.close()
            self._fine = None
        if self._fd is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None
        self._loop = None
        self._conn.close()

    def _look_fresh(self) -> None:
        self._fresh = None
        if self._wakes:
            self._look(fresh=True)
            # What this look saw is the baseline _only_local_inserts compares with.
            self._inserts_seen, self._outside_seen = self._local_inserts(), self._outside_version()

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._loop is None:
            self._timer = None
        elif delay < LOOP_RESOLUTION and self._fine is not None:
            self._fine.start(delay)
            self._timer = self._fine
        else:
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_event(self) -> None:
        try:
            # One read takes every event queued so far; more, written after it, make
            # the descriptor readable again and call this once more.
            os.read(self._fd, 65536)  # type: ignore[arg-type]  # the reader is added only with an fd
        except BlockingIOError:
            pass
        if not self._wakes:
            return  # nobody idle: the next arm() looks anyway
        if self._local_write():
            # An enqueue of this process is committing: as it returns it wakes this
            # process's workers itself, and their claim also sees whatever another
            # process committed before it. No need to look now.
            return
        if self._only_local_inserts():
            return
        if not self._look():
            # A commit writes its frames to the WAL first and publishes them in the
            # shared index just after: the write may not be visible yet. Look again
            # at the loop's next round (the other process needs microseconds to
            # publish it), then after 0.1 ms, 0.2, 0.4 ... for SETTLE seconds: soon
            # while the commit is most likely to appear, rarely once it is late (a
            # writer that lost its core between writing and publishing). Most such
            # events are stale, not early: this process's own commit, seen already
            # by the look a worker makes as it arms; doubling keeps their cost to
            # eight looks. The 0.1 ms looks need the fine timer: the loop sleeps in
            # whole milliseconds (epoll), so its own 0.1 ms timer would fire 1 ms
            # later, and a task whose commit the first look missed (up to one in
            # ten when both processes share the 2 cores) would wait that long.
            self._settle_until = time.monotonic() + SETTLE
            self._pause = 0.00005  # doubled before the first timer: 0.1 ms
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_soon(self._on_timer)  # type: ignore[union-attr]  # set while armed

    def _only_local_inserts(self) -> bool:
        """True if the commits behind this event are this process's own inserts, which woke its workers already.

        An insert committed here wakes this process's armed workers as it returns
        (Queue._notify), so its WAL write needs no look. But another process may
        have committed in the same moment: this process's own connection sees its
        data_version change then, and only then.
        """
        inserts = self._local_inserts()
        if inserts == self._inserts_seen:
            return False
        self._inserts_seen = inserts
        version = self._outside_version()
        seen, self._outside_seen = self._outside_seen, version
        return version is not None and version == seen

    def _on_timer(self) -> None:
        self._timer = None
        if not self._wakes:
            return
        changed = self._look()
        if not changed and time.monotonic() < self._settle_until:
            self._pause *= 2
            self._schedule(self._pause)
        else:
            self._settle_until = 0.0
            self._schedule(self._period)

    def _look(self, fresh: bool = False) -> bool:
        """Read data_version; wake the armed if it changed (or fresh) and a task is due. True if it changed."""
        try:
            version, ready = self._conn.execute(self._look_sql, (time.time(),)).fetchone()
        except sqlite3.Error:
            return False  # busy or briefly unreadable: the next event or timer looks again
        changed = version != self._last
        self._last = version
        if (fresh or changed) and ready:
            for wake in list(self._wakes):
                wake()
        return changed
