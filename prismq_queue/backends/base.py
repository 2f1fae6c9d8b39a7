"""The storage contract: what a backend must do, in small operations on plain rows.

The queue logic (validation, JSON, retry decisions, fencing outcomes, the
worker) lives in Queue and Worker and is written once. A backend only moves
rows: it receives values ready to store and returns tuples in the orders that
prismq_queue/records.py names (NewTask, ClaimedRow, TaskRow, Finish).

Backend is an abstract base class: a backend that misses one of the required
operations cannot be instantiated. Two operations exist only where the
database has a single file and a write-ahead log of its own (SQLite):
checkpoint() and backup(). They are optional; Backend's own versions raise
UnsupportedOperation, and Backend.supports() tells which a backend has.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional, Sequence

from ..errors import InvalidArgument, UnsupportedOperation

# The records a backend receives and returns, re-exported for the backends.
from ..records import (  # noqa: F401
    CANCELLED, COMPLETE, FAIL, FINAL_STATUS, LOST, MISSING, OK, RELEASE, RETRY, BackendStats, ClaimedRow, ClaimRequest,
    CycleResult, Finish, NewTask, TaskRow,
)

#: the operations a backend may leave out (see Backend.supports)
OPTIONAL_OPERATIONS = ("checkpoint", "backup")


class Backend(ABC):
    """The storage of a Queue: every method is one round trip to the database.

    Errors are the package's own (prismq_queue/errors.py), translated once per
    backend: QueueClosed before open() or after close(), QueueBusy when other
    writers hold the database longer than the busy timeout, InvalidArgument for
    a value the database cannot store, DatabaseError for everything else the
    database refuses. A method that raises has written nothing (each write is
    one transaction).
    """

    url: str  #: where the queue lives, safe to print (no password)

    # -- life cycle ----------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect, then create or migrate the schema. On an open backend it does nothing.

        DatabaseError when the database cannot be reached or used; SchemaVersionError
        (left untouched) when a newer prismq_queue wrote it.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections and helper threads. On a closed backend it does nothing; never raises."""

    # -- tasks ------------------------------------------------------------------

    @abstractmethod
    async def insert(self, rows: Sequence[NewTask]) -> list[int]:
        """Insert NewTask rows in one transaction, all or nothing; return their ids in the rows' order.

        A row whose idempotency key a queued or running task holds is not inserted:
        its id is that task's. Ids are never given twice, even after purge().
        """

    async def insert_handed(self, row: NewTask, claim: ClaimRequest,
                            deliver: Callable[[ClaimedRow], None]) -> int:
        """Insert one NewTask row; return its id. A backend may insert it already claimed per `claim`.

        The local hand-off (see Queue.enqueue): only if a claim made at that moment
        would have taken exactly this task, with every column as that claim would
        set it, and then `deliver(row)` is called with the ClaimedRow on the event
        loop's thread, right after the commit and before any other coroutine runs.
        This default never does: it inserts the task queued, as insert() does.
        """
        return (await self.insert([row]))[0]

    @abstractmethod
    async def cycle(self, finishes: Sequence[Finish], *, claim: Optional[ClaimRequest], recover: bool,
                    now: float) -> CycleResult:
        """Acknowledge, recover, then claim: one transaction, one round trip.

        `finishes`: Finish records, each applied only while its token still holds
        the lease; CycleResult.outcomes gives OK / CANCELLED / LOST / MISSING per
        record when any was refused, None when all applied.
        `recover`: requeue the tasks whose lease ended before `now` (dead-letter
        those out of attempts); CycleResult.recovered counts them.
        `claim`: lease up to claim.limit due tasks in claim.strategy's order, each
        set running with claim.token until claim.lease_until; CycleResult.claimed
        holds their ClaimedRow tuples in that order, and when fewer than the limit
        came back, next_due and next_expiry say when more may be ready. None (or a
        limit of 0) claims nothing.
        """

    @abstractmethod
    async def extend(self, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        """Move each (task id, token) lease's end to `lease_until`, in one transaction.

        Returns an outcome per lease: OK, or CANCELLED / LOST / MISSING when the
        token no longer holds it (nothing is raised for those).
        """

    @abstractmethod
    async def get(self, task_id: int) -> Optional[TaskRow]:
        """The task's TaskRow, or None when no task has that id."""

    @abstractmethod
    async def list_tasks(self, status: Optional[str], type_: Optional[str], limit: int) -> list[TaskRow]:
        """TaskRows, newest first, of one status and one type when given; at most `limit` (negative: all)."""

    @abstractmethod
    async def cancel(self, task_id: int, now: float) -> bool:
        """Set a queued or running task cancelled, finished at `now`; False when it was finished or missing.

        A running task's holder is refused afterwards (its finish records read back CANCELLED).
        """

    @abstractmethod
    async def stats(self, now: float, windows: Sequence[float]) -> BackendStats:
        """Counts by type and status, the oldest due task's run_at, and per window (seconds before
        `now`) the tasks that finished within it, by status: all from one snapshot."""

    @abstractmethod
    async def purge(self, before: float) -> int:
        """Delete the finished (completed, failed, cancelled) tasks that finished before `before`; return how many."""

    # -- maintenance ------------------------------------------------------------

    @abstractmethod
    async def vacuum(self) -> None:
        """Give back the space of deleted rows (SQLite rebuilds its file; PostgreSQL marks it for reuse)."""

    @abstractmethod
    async def integrity_check(self) -> list[str]:
        """["ok"] when the database is sound, else one line per problem found."""

    async def checkpoint(self, mode: str) -> tuple:
        """Optional: copy a write-ahead log into the database file; returns (busy, log pages, pages copied).

        `mode` is one of PASSIVE, FULL, RESTART, TRUNCATE (InvalidArgument if not).
        Backend's own version raises UnsupportedOperation.
        """
        raise UnsupportedOperation(self.unsupported("checkpoint"))

    async def backup(self, dest: str) -> None:
        """Optional: copy the live database into the file `dest`. Backend's own version raises UnsupportedOperation."""
        raise UnsupportedOperation(self.unsupported("backup"))

    @classmethod
    def supports(cls, operation: str) -> bool:
        """Whether this backend does the optional `operation` (one of OPTIONAL_OPERATIONS)."""
        if operation not in OPTIONAL_OPERATIONS:
            raise ValueError(f"{operation!r} is not an optional operation; they are {OPTIONAL_OPERATIONS}")
        return getattr(cls, operation) is not getattr(Backend, operation)

    def unsupported(self, operation: str) -> str:
        """Why `operation` cannot be done here, and what to do instead: the UnsupportedOperation message."""
        return f"{operation}() is not supported by the {type(self).__name__} backend"

    # -- wake-ups ---------------------------------------------------------------

    @abstractmethod
    def arm(self, wake: Callable[[], None]) -> None:
        """Call `wake` (from any thread) once ready work may have been added by another process."""

    @abstractmethod
    def disarm(self, wake: Callable[[], None]) -> None:
        """Stop calling `wake`; one that was never armed is ignored."""


def fence_outcome(row: Optional[tuple], token: Optional[int], wanted_status: Optional[str]) -> str:
    """Why a fenced write did (or did not) apply, from the row's (status, token) read back after it."""
    if row is None:
        return MISSING
    status, current = row
    if current != token:
        return LOST
    if wanted_status is not None and status == wanted_status:
        return OK
    if status == "cancelled":
        return CANCELLED
    return LOST


# Options and messages every backend shares, written once.
#: durability: "normal" (a crash of the machine may lose the last commits) or "full" (every commit is on disk)
DURABILITIES = ("normal", "full")
#: the text of QueueClosed for a call on a queue that was never opened, or was closed
NOT_OPEN = "the queue is not open (use 'async with Queue(...)' or 'await queue.open()')"


def check_durability(durability: Any) -> None:
    if durability not in DURABILITIES:
        raise InvalidArgument(f"durability must be 'normal' or 'full', got {durability!r}")
