"""Moves WAL checkpoints off the commit path.

With SQLite's automatic checkpoint, the commit that crosses the threshold
copies the log into the database and syncs the file, which on a real disk
costs milliseconds: a tail latency for whichever enqueue or acknowledgement
happens to pay it. Our connections turn automatic checkpoints off and this
thread, on its own connection, runs PASSIVE checkpoints instead: they never
block writers or readers, and durability is unchanged (a commit is in the WAL
either way; a checkpoint only copies it into the main file).
"""

from __future__ import annotations

import os
import sqlite3
import threading


class Checkpointer:
    """A daemon thread that checkpoints the WAL once it holds `min_bytes`, at most every `interval` s."""

    def __init__(self, path: str, interval: float = 0.2, min_bytes: int = 1 << 20) -> None:
        self._path = path
        self._wal = path + "-wal"
        self._interval = interval
        self._min_bytes = min_bytes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prismq-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            while not self._stop.wait(self._interval):
                try:
                    if os.path.getsize(self._wal) >= self._min_bytes:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (OSError, sqlite3.Error):
                    pass  # no WAL yet, or another checkpoint is running: try again later
        finally:
            conn.close()
