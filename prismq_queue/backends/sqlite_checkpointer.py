"""Moves WAL checkpoints off the commit path and keeps the WAL bounded without stalling writers.

With SQLite's automatic checkpoint, the commit that crosses the threshold
copies the log into the database and syncs the file, which on a real disk
costs milliseconds: a tail latency for whichever enqueue or acknowledgement
happens to pay it. Our connections turn automatic checkpoints off and this
thread, on its own connection, checkpoints instead. Durability is unchanged
either way: a commit is in the WAL; a checkpoint only copies it into the main
file.

Copying is not enough to bound the WAL: the log only starts over from its
beginning when a writer begins a transaction while every frame in it has been
copied and no reader still uses it. A PASSIVE checkpoint never blocks anyone,
but under steady writes some commit always lands while it syncs, so that moment
may never come (the stress benchmark saw a 50 MiB WAL). A RESTART checkpoint
forces the moment, but holds the write lock while it copies, syncs (two fsyncs:
milliseconds) and waits for readers; asking for one every tick made every
writer wait (issue 13: -28 % tasks/s with 20 processes, 3x the p99).

So each pass (every `interval`):

1. PASSIVE: copies what it can, blocking nobody. When it catches up with the
   writers, the next writer starts the log over by itself: no lock taken.
2. Only when the log still holds `restart_bytes` and the passive pass copied all
   of it (no reader holds an old snapshot, which a RESTART would wait for while
   writers wait behind it) a RESTART, waiting at most `restart_wait` for the
   write lock and for readers. It then has only the frames committed since the
   passive pass to copy, so writers wait for that short copy and its syncs,
   about once per `restart_bytes` of log. If it could not restart the log
   (busy writers or a reader), the next pass tries again.

Checkpoints are not run back to back, and not more often than every 0.1 s:
SQLite up to 3.51.2 (this machine has 3.40.1) has a race, the "WAL-reset bug"
(https://sqlite.org/wal.html#walresetbug, fixed in 3.51.3, 3.50.7, 3.44.6),
that can corrupt the database when a checkpoint starts just as another
connection's commit starts the log over. A variant that chased the writers
with back-to-back PASSIVE checkpoints every 0.05 s found its file corrupted once
in the latency benchmark ("database disk image is malformed"), which is what
that race leaves behind.

The decision counts frames still in the log (the checkpoint's own result), not
the file's size: a log that started over is overwritten from its beginning, so
the file keeps the size it once reached (unless the writers' journal_size_limit,
WAL_SIZE_LIMIT, truncates it), and a size test would ask for a RESTART every
tick forever once the file had grown past the threshold.
"""

from __future__ import annotations

import os
import sqlite3
import threading

# Every Queue connection sets PRAGMA journal_size_limit to this: the first
# commit after the log started over truncates a file that grew past it (after
# a long reader held the log, say). Well above what the restart threshold lets
# the log reach, so that truncation, an fsync-bound file-system operation in a
# writer's commit, stays rare.
WAL_SIZE_LIMIT = 16 << 20

_FRAME_HEADER = 24  # bytes before each page in the WAL file


class Checkpointer:
    """A daemon thread that checkpoints the WAL every `interval` s and restarts a long log (see module doc)."""

    def __init__(self, path: str, interval: float = 0.1, restart_bytes: int = 4 << 20,
                 restart_wait: float = 0.002) -> None:
        self._path = path
        self._wal = path + "-wal"
        self._interval = interval
        self._restart_bytes = restart_bytes
        self._restart_ms = max(0, round(restart_wait * 1000))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prismq-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            frame = conn.execute("PRAGMA page_size").fetchone()[0] + _FRAME_HEADER
            restart_frames = self._restart_bytes // frame
            while not self._stop.wait(self._interval):
                try:
                    if os.path.getsize(self._wal) == 0:
                        continue
                    self._pass(conn, restart_frames)
                except (OSError, sqlite3.Error):
                    pass  # no WAL yet, or the file is gone: try again later
        except sqlite3.Error:
            pass  # the file cannot be opened: nothing to checkpoint
        finally:
            conn.close()

    def _pass(self, conn: sqlite3.Connection, restart_frames: int) -> None:
        """One pass: PASSIVE, then a RESTART only if still needed (see module doc)."""
        busy, log, done = self._checkpoint(conn, "PASSIVE")
        if busy or log < restart_frames or done != log:
            # another connection's checkpoint is running (it does this work), the log
            # is short enough, or a reader holds an old snapshot a RESTART would wait for
            return
        conn.execute(f"PRAGMA busy_timeout = {self._restart_ms}")
        try:
            self._checkpoint(conn, "RESTART")
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection, mode: str) -> tuple[int, int, int]:
        """(busy, frames in the log, frames copied): SQLite's own result row."""
        busy, log, done = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return busy, log, done
