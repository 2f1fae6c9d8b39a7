"""The storage contract: what a backend must do, in small operations on plain rows.

The queue logic (validation, JSON, retry decisions, fencing outcomes, the
worker) lives in Queue and Worker and is written once. A backend only moves
rows: it receives values ready to store and returns tuples in the orders that
prismq_queue/records.py names (NewTask, ClaimedRow, TaskRow, Finish).
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from ..errors import InvalidArgument

# The records a backend receives and returns, re-exported for the backends.
from ..records import (  # noqa: F401
    CANCELLED, COMPLETE, FAIL, FINAL_STATUS, LOST, MISSING, OK, RELEASE, RETRY, BackendStats, ClaimRequest,
    CycleResult, Finish, NewTask, TaskRow,
)


class Backend:
    """Base class of the storage backends; every method is one round trip to the database."""

    url: str

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def insert(self, rows: Sequence[NewTask]) -> list[int]:
        """Insert NewTask rows in one transaction; return ids (an existing id for a live idempotency key)."""
        raise NotImplementedError

    async def cycle(self, finishes: Sequence[Finish], claim: Optional[ClaimRequest], recover: bool, now: float) -> CycleResult:
        """Apply finish records, recover expired leases, then claim: one transaction, one trip."""
        raise NotImplementedError

    async def extend(self, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        """Extend the (id, token) leases; return an outcome per lease."""
        raise NotImplementedError

    async def get(self, task_id: int) -> Optional[TaskRow]:
        raise NotImplementedError

    async def list_tasks(self, status: Optional[str], type_: Optional[str], limit: int) -> list[TaskRow]:
        raise NotImplementedError

    async def cancel(self, task_id: int, now: float) -> bool:
        raise NotImplementedError

    async def stats(self, now: float, windows: Sequence[float]) -> BackendStats:
        """Counts by type and status, the oldest due task's run_at, and per window the tasks finished within it."""
        raise NotImplementedError

    async def purge(self, before: float) -> int:
        raise NotImplementedError

    async def checkpoint(self, mode: str) -> tuple:
        raise NotImplementedError

    async def vacuum(self) -> None:
        raise NotImplementedError

    async def backup(self, dest: str) -> None:
        raise NotImplementedError

    async def integrity_check(self) -> list[str]:
        raise NotImplementedError

    def arm(self, wake: Callable[[], None]) -> None:
        """Call `wake` (from any thread) once ready work may have been added by another process."""
        raise NotImplementedError

    def disarm(self, wake: Callable[[], None]) -> None:
        """Stop calling `wake`."""
        raise NotImplementedError


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
