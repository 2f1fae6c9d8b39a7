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
    """A daemon thread that checkpoints the WAL once it holds `min_bytes`, at most every `interval` s.

    A PASSIVE checkpoint copies what no reader still needs, but the log only
    starts over from its beginning once a checkpoint has copied all of it while
    no reader used it; with several busy processes that moment may never come,
    and the file grows (50 MiB for 4,000 tasks in the stress benchmark). Past
    `restart_bytes` the checkpointer therefore asks for a RESTART checkpoint,
    which waits up to `restart_wait` seconds for readers and writers to let go.
    """

    def __init__(self, path: str, interval: float = 0.1, min_bytes: int = 1 << 20,
                 restart_bytes: int = 8 << 20, restart_wait: float = 0.02) -> None:
        self._path = path
        self._wal = path + "-wal"
        self._interval = interval
        self._min_bytes = min_bytes
        self._restart_bytes = restart_bytes
        self._restart_ms = int(restart_wait * 1000)
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
                    size = os.path.getsize(self._wal)
                    if size >= self._restart_bytes:
                        conn.execute(f"PRAGMA busy_timeout = {self._restart_ms}")
                        try:
                            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
                        finally:
                            conn.execute("PRAGMA busy_timeout = 0")
                    elif size >= self._min_bytes:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (OSError, sqlite3.Error):
                    pass  # no WAL yet, or another checkpoint is running: try again later
        finally:
            conn.close()
