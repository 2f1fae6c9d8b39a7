"""Notices commits made by other processes to a SQLite file, without taking any lock.

`PRAGMA data_version` changes when another connection commits. Polling it on a
connection of our own costs a few microseconds and reads only the WAL index, so
an idle worker can look every millisecond for a fraction of a core, and a
producer in another process is noticed within about one poll.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Callable


class ChangeWatcher:
    """A daemon thread that calls the armed wake-ups when ready work may have appeared."""

    def __init__(self, path: str, ready_sql: str, interval: float = 0.001) -> None:
        self._path = path
        self._ready_sql = ready_sql
        self._interval = interval
        self._wakes: set[Callable[[], None]] = set()
        self._lock = threading.Lock()
        self._armed = threading.Event()
        self._stopped = False
        self._fresh = False  # a wake was armed since the last poll
        self._thread = threading.Thread(target=self._run, name="prismq-watcher", daemon=True)
        self._thread.start()

    def arm(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakes.add(wake)
            self._fresh = True
            self._armed.set()

    def disarm(self, wake: Callable[[], None]) -> None:
        with self._lock:
            self._wakes.discard(wake)
            if not self._wakes:
                self._armed.clear()

    def stop(self) -> None:
        self._stopped = True
        self._armed.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            last = None
            while True:
                self._armed.wait()
                if self._stopped:
                    return
                try:
                    version = conn.execute("PRAGMA data_version").fetchall()[0][0]
                    with self._lock:
                        fresh, self._fresh = self._fresh, False
                    # A newly armed wake-up always checks once: work committed
                    # between the worker's last claim and arming must not wait
                    # for the next change to be seen.
                    if (fresh or version != last) and conn.execute(self._ready_sql, (time.time(),)).fetchall():
                        self._fire()
                    last = version
                except sqlite3.Error:
                    pass  # busy or briefly unreadable: look again next poll
                time.sleep(self._interval)
        finally:
            conn.close()

    def _fire(self) -> None:
        with self._lock:
            wakes = list(self._wakes)
        for wake in wakes:
            wake()
