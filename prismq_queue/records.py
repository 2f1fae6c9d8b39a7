"""Records: the named shapes of what passes between Queue, Worker and the backends.

Two kinds of shape live here. Records made once per round trip or per call are
NamedTuples and dataclasses (RoundTrip, ClaimRequest, CycleResult) or TypedDicts
(BackendStats), read by name.

Records made once per *task* on the hot path (a new task's row, a claimed row, a
finish record) stay plain tuples, with their fields named here, in one place, and
read by unpacking (`kind, task_id, token, value, when = record`) or with the
index constants below, never with a bare number. The reason is measured: a tuple
subclass (a NamedTuple, even built with tuple.__new__) costs about 1,350 more
instructions to build and free than a plain tuple on CPython 3.11 (cachegrind),
about 1% of a drained task's whole cost per record, and a drained task makes two
(its new row and its finish record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple, Optional, Tuple, TypedDict

from .task import Task

# -- finish records ---------------------------------------------------------

#: How an attempt ended: (kind, task_id, token, value, when), a plain tuple.
#:   complete: value = result JSON, when = finished_at
#:   retry:    value = error text,  when = new run_at
#:   fail:     value = error text,  when = finished_at
#:   release:  value = None,        when = new run_at (attempt not counted)
#: `token` is the lease's fencing token: the record applies only while the lease is still it.
Finish = Tuple[str, int, Optional[int], Optional[str], float]
FINISH_FIELDS = ("kind", "task_id", "token", "value", "when")
# (Final: a type checker then knows which field each index constant reads.)
F_KIND: Final = 0
F_TASK_ID: Final = 1
F_TOKEN: Final = 2
F_VALUE: Final = 3
F_WHEN: Final = 4

COMPLETE, RETRY, FAIL, RELEASE = "complete", "retry", "fail", "release"

#: the status each kind of finish record leaves a task in
FINAL_STATUS = {COMPLETE: "completed", RETRY: "queued", FAIL: "failed", RELEASE: "queued"}

# Outcomes of a fenced write (a finish record, a lease extension).
OK, CANCELLED, LOST, MISSING = "ok", "cancelled", "lost", "missing"

# -- rows ------------------------------------------------------------------------

#: A new task, as Queue hands it to Backend.insert(): a plain tuple in this order.
NewTask = Tuple[str, str, int, float, int, float, Optional[str]]
NEW_TASK_FIELDS = ("type", "payload", "priority", "run_at", "max_attempts", "created_at", "idempotency_key")
N_TYPE: Final = 0
N_PAYLOAD: Final = 1
N_PRIORITY: Final = 2
N_RUN_AT: Final = 3
N_MAX_ATTEMPTS: Final = 4
N_CREATED_AT: Final = 5
N_IDEMPOTENCY_KEY: Final = 6

#: A task a claim leased, as a backend returns it: a plain tuple in this order.
ClaimedRow = Tuple[int, str, str, int, int, int, float, float, Optional[str]]
CLAIMED_FIELDS = ("id", "type", "payload", "priority", "attempts", "max_attempts", "run_at", "created_at",
                  "idempotency_key")
C_ID: Final = 0
C_TYPE: Final = 1
C_PAYLOAD: Final = 2
C_PRIORITY: Final = 3
C_ATTEMPTS: Final = 4
C_MAX_ATTEMPTS: Final = 5
C_RUN_AT: Final = 6
C_CREATED_AT: Final = 7
C_IDEMPOTENCY_KEY: Final = 8

#: A whole task, as Backend.get() and Backend.list_tasks() return it: a plain tuple in this order.
TaskRow = tuple
TASK_FIELDS = (
    "id", "type", "payload", "priority", "status", "attempts", "max_attempts", "run_at", "created_at",
    "lease_until", "token", "worker_id", "result", "error", "idempotency_key", "finished_at",
)

# -- per round trip --------------------------------------------------------------


@dataclass
class ClaimRequest:
    """What a round trip's claim asks for: up to `limit` tasks, leased to `worker_id` until `lease_until`."""

    worker_id: str
    limit: int
    strategy: str  # a Strategy value
    lease_until: float
    token: int  # the fencing token every task of this claim gets


@dataclass
class CycleResult:
    """What one Backend.cycle() did: outcome per finish record, claimed rows, recovered count."""

    outcomes: Optional[list[str]] = None  # None: every record was applied
    claimed: list[ClaimedRow] = field(default_factory=list)
    recovered: int = 0
    next_due: Optional[float] = None  # earliest run_at of a queued task, when the claim came up short
    next_expiry: Optional[float] = None  # earliest lease end of a running task, idem


class RoundTrip(NamedTuple):
    """What one Queue.round_trip() did."""

    #: an outcome per finish record ("ok", "cancelled", "lost", "missing"), or None: every record applied
    outcomes: Optional[list[str]]
    #: the tasks the trip's claim leased, in the strategy's order
    tasks: list[Task]
    #: expired leases the trip recovered
    recovered: int
    #: earliest run_at of a queued task, when the claim came up short (None otherwise or if none)
    next_due: Optional[float]
    #: earliest lease end of a running task, when the claim came up short (None otherwise or if none)
    next_expiry: Optional[float]


class BackendStats(TypedDict):
    """What Backend.stats() returns; Queue.stats() turns it into the public figures."""

    #: (task type, status, number of tasks) for every pair that has tasks
    counts: list[tuple[str, str, int]]
    #: run_at of the oldest queued task that is due, or None
    oldest_due: Optional[float]
    #: for each window asked for (seconds): status -> tasks that reached it within the window
    recent: dict[float, dict[str, int]]
