"""Notices commits made by other processes to a SQLite file, without taking any lock.

`PRAGMA data_version` changes when another connection commits; reading it
takes no lock. What remains is *when* to read it. On Linux the watcher sleeps
on an inotify watch of the WAL file, which every commit writes to: an idle
worker then costs nothing until a commit happens, and sees it within
microseconds. Elsewhere (or where inotify is unavailable) it polls every
millisecond, a few percent of a core.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import sqlite3
import threading
import time
from typing import Callable, Optional

_IN_MODIFY = 0x00000002
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class _WalEvents:
    """Blocks until the WAL file is written to (inotify), or for a fixed interval (fallback)."""

    def __init__(self, wal_path: str, interval: float) -> None:
        self._interval = interval
        self._fd: Optional[int] = None
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
            fd = libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
            if fd < 0:
                return
            if libc.inotify_add_watch(fd, os.fsencode(wal_path), _IN_MODIFY) < 0:
                os.close(fd)
                return
            self._fd = fd
        except (OSError, AttributeError):
            self._fd = None  # not Linux, or no inotify: poll

    @property
    def event_driven(self) -> bool:
        return self._fd is not None

    def drain(self) -> None:
        if self._fd is None:
            return
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float) -> bool:
        """Wait; True if the WAL was written to meanwhile (always False when polling)."""
        if self._fd is None:
            time.sleep(self._interval)
            return False
        return bool(select.select([self._fd], [], [], timeout)[0])

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ChangeWatcher:
    """A daemon thread that calls the armed wake-ups when ready work may have appeared."""

    def __init__(self, path: str, ready_sql: str, interval: float = 0.001, safety_interval: float = 0.25) -> None:
        self._path = path
        self._ready_sql = ready_sql
        self._interval = interval
        self._safety_interval = safety_interval  # the longest an event-driven wait lasts
        self._wakes: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        self._armed = threading.Event()
        self._stopped = False
        self._fresh = False  # a wake was armed since the last look
        self._events = _WalEvents(path + "-wal", interval)
        self._thread = threading.Thread(target=self._run, name="prismq-watcher", daemon=True)
        self._thread.start()

    @property
    def event_driven(self) -> bool:
        return self._events.event_driven

    def arm(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakes.add(wake)
            self._fresh = True
            self._armed.set()

    def disarm(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakes.discard(wake)
            if not self._wakes and not self._stopped:
                self._armed.clear()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._armed.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            last = None
            settle_until = 0.0
            pause = self._interval
            while True:
                self._armed.wait()
                if self._stopped:
                    return
                # Drain first, then look: a commit after this point wakes the next wait.
                self._events.drain()
                try:
                    version = conn.execute("PRAGMA data_version").fetchall()[0][0]
                    with self._lock:
                        fresh, self._fresh = self._fresh, False
                    # A newly armed wake-up always checks once: work committed
                    # between the worker's last claim and arming must not wait
                    # for the next change to be seen.
                    if (fresh or version != last) and conn.execute(self._ready_sql, (time.time(),)).fetchall():
                        self._fire()
                    if version != last:
                        settle_until = 0.0
                    last = version
                except sqlite3.Error:
                    pass  # busy or briefly unreadable: look again next time
                if time.monotonic() < settle_until:
                    time.sleep(pause)
                    pause = min(pause * 2, self._interval)
                elif self._events.wait(self._safety_interval) and self._events.event_driven:
                    # A commit writes its frames to the WAL first and publishes them
                    # in the shared index just after: the write that woke us may not
                    # be visible yet. Look again soon (0.1 ms, doubling to the poll
                    # interval) for a short while.
                    settle_until = time.monotonic() + 0.02
                    pause = 0.0001
        finally:
            conn.close()
            self._events.close()  # the thread owns the descriptor it waits on

    def _fire(self) -> None:
        with self._lock:
            wakes = list(self._wakes)
        for wake in wakes:
            wake()
