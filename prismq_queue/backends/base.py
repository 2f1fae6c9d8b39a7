"""The storage contract: what a backend must do, in small operations on plain rows.

The queue logic (validation, JSON, retry decisions, fencing outcomes, the
worker) lives in Queue and Worker and is written once. A backend only moves
rows: it receives values ready to store and returns tuples in the column
orders named below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from ..errors import InvalidArgument

# Row layouts shared by every backend.
#: insert(): one new task.
NEW_ROW = ("type", "payload", "priority", "run_at", "max_attempts", "created_at", "idempotency_key")
#: claim results.
CLAIMED_ROW = ("id", "type", "payload", "priority", "attempts", "max_attempts", "run_at", "created_at", "idempotency_key")
#: get() / list_tasks() results.
TASK_ROW = (
    "id", "type", "payload", "priority", "status", "attempts", "max_attempts", "run_at", "created_at",
    "lease_until", "token", "worker_id", "result", "error", "idempotency_key", "finished_at",
)

# Kinds of finish record: (kind, id, token, value, when).
#   complete: value = result JSON, when = finished_at
#   retry:    value = error text,  when = new run_at
#   fail:     value = error text,  when = finished_at
#   release:  value = None,        when = new run_at (attempt not counted)
COMPLETE, RETRY, FAIL, RELEASE = "complete", "retry", "fail", "release"

# Outcomes of a finish record.
OK, CANCELLED, LOST, MISSING = "ok", "cancelled", "lost", "missing"


@dataclass
class ClaimRequest:
    worker_id: str
    limit: int
    strategy: str
    lease_until: float
    token: int


@dataclass
class CycleResult:
    """What one round trip did: outcome per finish record, claimed rows, recovered count."""

    outcomes: Optional[list[str]] = None  # None: every record was applied
    claimed: list[tuple] = field(default_factory=list)
    recovered: int = 0
    next_due: Optional[float] = None  # earliest run_at of a queued task, when the claim came up short
    next_expiry: Optional[float] = None  # earliest lease end of a running task, idem


class Backend:
    """Base class of the storage backends; every method is one round trip to the database."""

    url: str

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def insert(self, rows: Sequence[tuple]) -> list[int]:
        """Insert NEW_ROW tuples in one transaction; return ids (an existing id for a live idempotency key)."""
        raise NotImplementedError

    async def cycle(self, finishes: Sequence[tuple], claim: Optional[ClaimRequest], recover: bool, now: float) -> CycleResult:
        """Apply finish records, recover expired leases, then claim: one transaction, one trip."""
        raise NotImplementedError

    async def extend(self, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        """Extend the (id, token) leases; return an outcome per lease."""
        raise NotImplementedError

    async def get(self, task_id: int) -> Optional[tuple]:
        raise NotImplementedError

    async def list_tasks(self, status: Optional[str], type_: Optional[str], limit: int) -> list[tuple]:
        raise NotImplementedError

    async def cancel(self, task_id: int, now: float) -> bool:
        raise NotImplementedError

    async def stats(self, now: float, windows: Sequence[float]) -> dict[str, Any]:
        """Return {"counts": [(type, status, n)], "oldest_due": float|None, "recent": {window: {status: n}}}."""
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


#: the status each kind of finish record leaves a task in
FINAL_STATUS = {COMPLETE: "completed", RETRY: "queued", FAIL: "failed", RELEASE: "queued"}


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
