"""Queue: the public API. It validates and encodes once, then calls its backend."""

from __future__ import annotations

import json
import json.scanner
import math
import os
import random
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Optional, Sequence, Union

from . import backends
from .errors import DatabaseError, InvalidArgument, LeaseLost, PayloadError, TaskCancelled, TaskNotFound
from .retry import RetryPolicy
from .strategy import Strategy
from .records import (
    CANCELLED, COMPLETE, FAIL, MISSING, N_RUN_AT, OK, RELEASE, RETRY, ClaimedRow, ClaimRequest, CycleResult, Finish,
    NewTask, RoundTrip, TaskRow,
)
from .task import Task, TaskStatus
from .validation import (
    check_int, check_seconds, check_type, encode_checked, encode_json, encoding_problem, error_text, storable_text,
)

RECENT_WINDOWS = {"last_1m": 60.0, "last_5m": 300.0, "last_1h": 3600.0}
_scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]  # typeshed types the class, not the C call


def _decode(text: str) -> Any:
    """json.loads(text), through the C scanner directly: a claimed task's payload is
    decoded once per task, and json.loads spends more in its Python-level wrappers
    (two regular-expression matches for surrounding whitespace) than in the scanner."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # not JSON at its start: json.loads says why
        return json.loads(text)
    if end != len(text):  # whitespace or more after the value: json.loads decides
        return json.loads(text)
    return value

# Fencing tokens: one generator per process, seeded afresh in every child after
# os.fork(). A generator seeded once and inherited would give parent and child
# the same tokens, and a stale holder's completion would pass the fence.
_tokens = random.Random()
_token_bits = _tokens.getrandbits
os.register_at_fork(after_in_child=_tokens.seed)
_RUNNING = TaskStatus.RUNNING


def _due_time(now: float, delay: Any, run_at: Any) -> float:
    if run_at is not None:
        if delay not in (None, 0, 0.0):
            raise InvalidArgument("give either delay or run_at, not both")
        if isinstance(run_at, datetime):
            try:
                return run_at.timestamp()  # a naive datetime is taken as local time
            except (ValueError, OverflowError, OSError) as exc:  # datetime.min in a zone east of UTC, ...
                raise InvalidArgument(f"run_at {run_at!r} is not a representable time: {exc}") from None
        if isinstance(run_at, bool) or not isinstance(run_at, (int, float)) or not math.isfinite(run_at):
            raise InvalidArgument(f"run_at must be a datetime or epoch seconds, got {run_at!r}")
        return float(run_at)
    if delay is None:
        return now
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay) or delay < 0:
        raise InvalidArgument(f"delay must be a finite number of seconds >= 0, got {delay!r}")
    return now + delay


def _task_from_claim(row: ClaimedRow, lease_until: float, token: int, worker_id: str) -> Task:
    tid, ttype, payload, priority, attempts, max_attempts, run_at, created_at, key = row
    return Task(tid, ttype, _decode(payload), priority, _RUNNING, attempts, max_attempts, run_at, created_at,
                lease_until, token, worker_id, None, None, key)


def _decode_stored(text: str, task_id: int, what: str) -> Any:
    try:
        return _decode(text)
    except RecursionError:  # stored by a version that did not limit nesting
        raise DatabaseError(f"task {task_id}: its stored {what} nests too deeply to decode "
                            f"(more than this interpreter's recursion limit allows)") from None


def _task_from_row(row: TaskRow) -> Task:
    (tid, ttype, payload, priority, status, attempts, max_attempts, run_at, created_at,
     lease_until, token, worker_id, result, error, key, finished_at) = row
    return Task(tid, ttype, _decode_stored(payload, tid, "payload"), priority, TaskStatus(status), attempts,
                max_attempts, run_at, created_at, lease_until, token, worker_id,
                None if result is None else _decode_stored(result, tid, "result"), error, key, finished_at)


class Queue:
    """A persistent task queue: one SQLite file (a path or sqlite:///path), or a PostgreSQL schema
    (a postgresql:// URL)."""

    def __init__(self, location: Union[str, "os.PathLike[str]"], *, durability: str = "normal",
                 retry: Optional[RetryPolicy] = None, busy_timeout: float = 30.0, **backend_options: Any) -> None:
        self._backend = backends.from_url(location, durability=durability, busy_timeout=busy_timeout,
                                          **backend_options)
        self.retry = retry if retry is not None else RetryPolicy()
        if not isinstance(self.retry, RetryPolicy):
            raise InvalidArgument(f"retry must be a RetryPolicy, got {retry!r}")
        self._policies: dict[str, RetryPolicy] = {}
        self._wakes: set[Callable[[], None]] = set()
        # Idle Workers of this process that may take a new task straight from
        # enqueue() (see arm): wake-up -> (ask for a claim, hand over the Task).
        self._takers: dict[Callable[[], None], tuple[Callable[[], Optional[ClaimRequest]],
                                                     Callable[[Task], None]]] = {}
        self._rng = random.Random()

    @property
    def backend(self) -> backends.Backend:
        return self._backend

    # -- life cycle -------------------------------------------------------

    async def open(self) -> "Queue":
        """Open the database, creating or migrating its schema."""
        await self._backend.open()
        return self

    async def close(self) -> None:
        """Close the database connection."""
        await self._backend.close()

    async def __aenter__(self) -> "Queue":
        return await self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    # -- retry policy -----------------------------------------------------

    def set_retry_policy(self, task_type: str, policy: RetryPolicy) -> None:
        """Use `policy` for tasks of `task_type` instead of the queue's default."""
        if not isinstance(policy, RetryPolicy):
            raise InvalidArgument(f"policy must be a RetryPolicy, got {policy!r}")
        self._policies[check_type(task_type)] = policy

    def retry_policy(self, task_type: str) -> RetryPolicy:
        """The retry policy that applies to `task_type`."""
        return self._policies.get(task_type, self.retry)

    # -- producing --------------------------------------------------------

    async def enqueue(self, task_type: str, payload: Any = None, *, priority: int = 100, delay: float = 0.0,
                      run_at: Union[datetime, float, None] = None, max_attempts: Optional[int] = None,
                      idempotency_key: Optional[str] = None) -> int:
        """Add one task; returns its id (the live task's id if `idempotency_key` is already queued or running)."""
        now = time.time()
        row: NewTask
        if type(task_type) is str and type(priority) is int and delay == 0 and run_at is None \
                and max_attempts is None and idempotency_key is None and task_type.isascii() and task_type \
                and not task_type.isspace() and -(2**63) <= priority < 2**63:
            # The usual call (a type, a payload, perhaps a priority) checked in one
            # expression, as enqueue_many checks its plain items: what _new_row makes of it.
            row = (task_type, encode_json(payload, "payload"), priority, now,
                   self._policies.get(task_type, self.retry).max_attempts, now, None)
        else:
            row = self._new_row(now, task_type, payload, priority, delay, run_at, max_attempts, idempotency_key)
        if self._takers and idempotency_key is None and row[N_RUN_AT] <= now:
            return await self._hand_off(row)
        (task_id,) = await self._insert([row])
        return task_id

    async def _hand_off(self, row: NewTask) -> int:
        """Insert a due task, claimed at once by an idle Worker of this event loop if one can take it.

        Such a worker would claim the task as soon as the insert woke it: one more
        transaction and a loop round or more before its handler starts. Instead
        the backend may insert the row already claimed for it, in the insert's own
        transaction, and only if that claim would have taken exactly this task
        (Backend.insert_handed); the worker then starts it at once. Otherwise, as
        for any insert, the armed wake-ups are called.
        """
        taker = self._taker()
        if taker is None:
            (task_id,) = await self._insert([row])
            return task_id
        claim, take = taker
        handed = False

        def deliver(claimed: ClaimedRow) -> None:
            nonlocal handed
            handed = True
            take(_task_from_claim(claimed, claim.lease_until, claim.token, claim.worker_id))

        try:
            return await self._backend.insert_handed(row, claim, deliver)
        finally:
            if not handed:
                self._notify()  # queued after all: wake this process's idle workers at once

    async def enqueue_many(self, items: Iterable[Any], *, priority: int = 100, delay: float = 0.0,
                           run_at: Union[datetime, float, None] = None,
                           max_attempts: Optional[int] = None) -> list[int]:
        """Add many tasks in one transaction; each item is (type, payload), (type, payload, options) or a dict."""
        now = time.time()
        # Check the batch-wide options once; then each plain (type, payload) item
        # costs a type check, a dict lookup and one JSON encoding.
        _, _, prio, due, _, _, _ = self._new_row(now, "-", None, priority, delay, run_at, max_attempts, None)
        policies, default_max = self._policies, self.retry.max_attempts
        rows: list[NewTask] = []
        append = rows.append
        try:
            for item in items:
                if type(item) is tuple and len(item) == 2:
                    task_type, payload = item
                    if type(task_type) is not str or not task_type or task_type.isspace() \
                            or not task_type.isascii():
                        check_type(task_type)
                    limit = max_attempts or (policies[task_type].max_attempts if task_type in policies
                                             else default_max)
                    append((task_type, encode_checked(payload), prio, due, limit, now, None))
                    continue
                task_type, payload, options = self._unpack(item)
                opts = {"priority": priority, "delay": delay, "run_at": run_at, "max_attempts": max_attempts,
                        "idempotency_key": None}
                unknown = set(options) - set(opts)
                if unknown:
                    raise InvalidArgument(f"unknown task option(s): {', '.join(sorted(unknown))}")
                opts.update(options)
                append(self._new_row(now, task_type, payload, opts["priority"], opts["delay"], opts["run_at"],
                                     opts["max_attempts"], opts["idempotency_key"]))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            if isinstance(exc, InvalidArgument):
                raise
            raise PayloadError(f"payload of task {len(rows)} cannot be stored as JSON: {encoding_problem(exc)}") from None
        if not rows:
            return []
        return await self._insert(rows)

    async def _insert(self, rows: list[NewTask]) -> list[int]:
        try:
            return await self._backend.insert(rows)
        finally:
            self._notify()  # wake this process's idle workers at once

    def _taker(self) -> Optional[tuple[ClaimRequest, Callable[[Task], None]]]:
        """The claim of the first armed Worker that can take a task now (see arm), and how to hand it over."""
        for request, take in tuple(self._takers.values()):
            claim = request()
            if claim is not None:
                return claim, take
        return None

    @staticmethod
    def _unpack(item: Any) -> tuple[Any, Any, dict]:
        if isinstance(item, dict):
            options = dict(item)
            try:
                return options.pop("type"), options.pop("payload", None), options
            except KeyError:
                raise InvalidArgument(f"task dict needs a 'type': {item!r}") from None
        if isinstance(item, (tuple, list)) and 1 <= len(item) <= 3:
            payload = item[1] if len(item) > 1 else None
            options = item[2] if len(item) > 2 and item[2] is not None else {}
            if not isinstance(options, dict):
                raise InvalidArgument(f"task options must be a dict, got {options!r}")
            return item[0], payload, options
        raise InvalidArgument(f"each task must be (type, payload), (type, payload, options) or a dict, got {item!r}")

    def _new_row(self, now: float, task_type: Any, payload: Any, priority: Any, delay: Any, run_at: Any,
                 max_attempts: Any, idempotency_key: Any) -> NewTask:
        check_type(task_type)
        check_int("priority", priority)
        if max_attempts is None:
            max_attempts = self._policies.get(task_type, self.retry).max_attempts
        elif check_int("max_attempts", max_attempts) < 1:
            raise InvalidArgument(f"max_attempts must be >= 1, got {max_attempts!r}")
        if idempotency_key is not None and (not isinstance(idempotency_key, str) or not idempotency_key
                                            or storable_text(idempotency_key) is not idempotency_key):
            raise InvalidArgument(f"idempotency_key must be a non-empty string of valid Unicode or None, "
                                  f"got {idempotency_key!r}")
        due = now if (delay == 0 and run_at is None) else _due_time(now, delay, run_at)
        return (task_type, encode_json(payload, "payload"), priority, due, max_attempts, now, idempotency_key)

    # -- consuming --------------------------------------------------------

    async def claim(self, worker_id: str, limit: int = 1, strategy: Union[Strategy, str] = Strategy.PRIORITY,
                    lease_seconds: float = 30.0) -> list[Task]:
        """Lease up to `limit` due tasks to `worker_id`, in the strategy's order."""
        request = self.claim_request(worker_id, limit, strategy, lease_seconds)
        result = await self._backend.cycle((), claim=request, recover=True, now=time.time())
        return self._tasks(result, request)

    # -- the worker's seam ----------------------------------------------------
    #
    # A Worker does not call claim(), complete() and fail() one by one: it keeps
    # the finish records of the handlers that ended (complete_record, fail_record,
    # release_record) and hands them over with its next claim, so a whole cycle
    # costs one round trip. These two methods are that cycle; the Worker uses
    # nothing else of the Queue that is not public API.

    def claim_request(self, worker_id: str, limit: int, strategy: Union[Strategy, str] = Strategy.PRIORITY,
                      lease_seconds: float = 30.0) -> ClaimRequest:
        """Check a claim's arguments and draw its fencing token, for round_trip(); InvalidArgument if bad.

        The lease ends `lease_seconds` from now: make the request just before the trip.
        """
        if type(strategy) is Strategy and type(limit) is int and type(lease_seconds) is float \
                and type(worker_id) is str and worker_id and 0 <= limit < 2**63 and 0 < lease_seconds < math.inf:
            # What a Worker asks for before each trip and each hand-off, checked in
            # one expression: the checks below cost more than the rest of the claim's Python.
            return ClaimRequest(worker_id, limit, strategy._value_, time.time() + lease_seconds, _token_bits(62))
        if not isinstance(worker_id, str) or not worker_id:
            raise InvalidArgument(f"worker_id must be a non-empty string, got {worker_id!r}")
        if check_int("limit", limit) < 0:
            raise InvalidArgument(f"limit must be >= 0, got {limit!r}")
        try:
            strategy = Strategy(strategy)
        except ValueError:
            raise InvalidArgument(f"unknown strategy {strategy!r}") from None
        if isinstance(lease_seconds, bool) or not isinstance(lease_seconds, (int, float)) \
                or not 0 < lease_seconds < math.inf:
            raise InvalidArgument(f"lease_seconds must be a finite number of seconds > 0, got {lease_seconds!r}")
        return ClaimRequest(worker_id, limit, strategy.value, time.time() + lease_seconds,
                            _token_bits(62))

    async def round_trip(self, finishes: Sequence[Finish], request: Optional[ClaimRequest], *,
                         recover: bool = True) -> RoundTrip:
        """Acknowledge, recover, claim: one transaction, one trip to the database.

        Applies the finish records `finishes` (each fenced by its task's token; a
        refused one gets its outcome in `outcomes`, nothing is raised for it), then
        with `recover` requeues or dead-letters tasks whose leases expired, then
        leases tasks per `request` (from claim_request(); None claims nothing).
        Raises the package's QueueError subclasses when the database fails; the same
        records may then be sent again (one that was applied reads back as "ok").
        """
        result = await self._backend.cycle(finishes, claim=request, recover=recover, now=time.time())
        tasks = self._tasks(result, request) if request is not None and result.claimed else []
        return RoundTrip(result.outcomes, tasks, result.recovered, result.next_due, result.next_expiry)

    @staticmethod
    def _tasks(result: CycleResult, request: ClaimRequest) -> list[Task]:
        """The claimed rows as Tasks, leased per `request`."""
        lease_until, token, worker_id = request.lease_until, request.token, request.worker_id
        rows: list[ClaimedRow] = result.claimed
        # What _task_from_claim does, in the comprehension: a call per claimed task cost ~0.5% of a drain.
        return [Task(tid, ttype, _decode(payload), priority, _RUNNING, attempts, max_attempts, run_at, created_at,
                     lease_until, token, worker_id, None, None, key)
                for tid, ttype, payload, priority, attempts, max_attempts, run_at, created_at, key in rows]

    def complete_record(self, task: Task, result: Any) -> Finish:
        """The finish record that completes `task` with `result`."""
        # None, the result of most handlers, is "null" without a trip through the encoder.
        return (COMPLETE, task.id, task.token, "null" if result is None else encode_json(result, "result"),
                time.time())

    def fail_record(self, task: Task, error: Any, retry: bool = True) -> Finish:
        """The finish record for a failed attempt: a retry after backoff, or the dead letter."""
        text = error_text(error)
        now = time.time()
        policy = self._policies.get(task.type, self.retry)
        if retry and policy.should_retry(task.attempts, task.max_attempts):
            return (RETRY, task.id, task.token, text, now + policy.delay(task.attempts, self._rng))
        return (FAIL, task.id, task.token, text, now)

    @staticmethod
    def release_record(task: Task) -> Finish:
        """The finish record that hands an unfinished task back, its attempt not counted."""
        return (RELEASE, task.id, task.token, None, time.time())

    async def complete(self, task: Task, result: Any = None) -> None:
        """Mark a claimed task completed; raises LeaseLost or TaskCancelled if the lease is no longer ours."""
        record = self.complete_record(self._check_task(task), result)
        await self._finish_one(task, record)
        task.status, task.result, task.lease_until = TaskStatus.COMPLETED, result, None

    async def fail(self, task: Task, error: Any, retry: bool = True) -> TaskStatus:
        """Record a failed attempt; returns QUEUED when it will be retried, FAILED when it is dead."""
        record = self.fail_record(self._check_task(task), error, retry)
        await self._finish_one(task, record)
        kind, _, _, text, _ = record
        task.status = TaskStatus.QUEUED if kind == RETRY else TaskStatus.FAILED
        task.error, task.lease_until = text, None
        return task.status

    async def release(self, task: Task) -> None:
        """Hand a claimed task back to the queue unfinished, without counting the attempt."""
        await self._finish_one(self._check_task(task), self.release_record(task))
        task.status, task.lease_until = TaskStatus.QUEUED, None

    async def extend_leases(self, tasks: Sequence[Task], lease_seconds: float) -> list[str]:
        """Extend many leases in one transaction; returns an outcome per task ("ok", "cancelled", "lost", ...)."""
        until = time.time() + check_seconds("lease_seconds", lease_seconds)
        outcomes = await self._backend.extend([(t.id, t.token) for t in tasks], until)
        for task, outcome in zip(tasks, outcomes):
            if outcome == OK:
                task.lease_until = until
        return outcomes

    async def extend_lease(self, task: Task, lease_seconds: float = 30.0) -> float:
        """Push the task's lease `lease_seconds` into the future; returns the new lease end."""
        self._check_task(task)
        until = time.time() + check_seconds("lease_seconds", lease_seconds)
        (outcome,) = await self._backend.extend([(task.id, task.token)], until)
        raise_for_outcome(task, outcome)
        task.lease_until = until
        return until

    @staticmethod
    def _check_task(task: Any) -> Task:
        if not isinstance(task, Task) or task.token is None:
            raise InvalidArgument(f"expected a Task returned by claim(), got {task!r}")
        return task

    async def _finish_one(self, task: Task, record: Finish) -> None:
        result = await self._backend.cycle((record,), claim=None, recover=False, now=time.time())
        raise_for_outcome(task, OK if result.outcomes is None else result.outcomes[0])

    # -- reading and managing -----------------------------------------------

    async def get(self, task_id: int) -> Optional[Task]:
        """The task with this id, or None."""
        row = await self._backend.get(check_int("task id", task_id))
        return None if row is None else _task_from_row(row)

    async def list_tasks(self, status: Union[TaskStatus, str, None] = None, task_type: Optional[str] = None,
                         limit: int = 100) -> list[Task]:
        """The newest tasks, optionally of one status and type."""
        if status is not None:
            try:
                status = TaskStatus(status).value
            except ValueError:
                raise InvalidArgument(f"unknown status {status!r}") from None
        rows = await self._backend.list_tasks(status, task_type, check_int("limit", limit))
        return [_task_from_row(r) for r in rows]

    async def cancel(self, task_id: int) -> bool:
        """Cancel a queued or running task; a running one's completion is then refused. False if finished."""
        return await self._backend.cancel(check_int("task id", task_id), time.time())

    async def stats(self) -> dict[str, Any]:
        """Counts by status and by type, the oldest due task's age, and recent completions and failures."""
        now = time.time()
        raw = await self._backend.stats(now, tuple(RECENT_WINDOWS.values()))
        by_status = {s.value: 0 for s in TaskStatus}
        by_type: dict[str, dict[str, int]] = {}
        for task_type, status, n in raw["counts"]:
            by_status[status] = by_status.get(status, 0) + n
            by_type.setdefault(task_type, {})[status] = n
        oldest = raw["oldest_due"]
        recent = {}
        for name, window in RECENT_WINDOWS.items():
            counts = raw["recent"][window]
            recent[name] = {s: counts.get(s, 0) for s in ("completed", "failed", "cancelled")}
        return {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "by_type": by_type,
            "oldest_due_age": None if oldest is None else max(0.0, now - oldest),
            "recent": recent,
        }

    async def recover(self) -> int:
        """Requeue (or dead-letter) tasks whose leases expired; returns how many."""
        return (await self._backend.cycle((), claim=None, recover=True, now=time.time())).recovered

    async def purge(self, older_than: float) -> int:
        """Delete finished tasks that finished more than `older_than` seconds ago; returns how many."""
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or older_than < 0:
            raise InvalidArgument(f"older_than must be seconds >= 0, got {older_than!r}")
        return await self._backend.purge(time.time() - older_than)

    async def checkpoint(self, mode: str = "TRUNCATE") -> tuple:
        """Copy SQLite's write-ahead log into the database file (and, by default, truncate it).
        PostgreSQL runs its own checkpoints: UnsupportedOperation there."""
        if not isinstance(mode, str):
            raise InvalidArgument(f"checkpoint mode must be a string such as 'TRUNCATE', got {mode!r}")
        return await self._backend.checkpoint(mode)

    async def vacuum(self) -> None:
        """Reclaim the space of deleted rows: SQLite rebuilds the file, PostgreSQL vacuums the table."""
        await self._backend.vacuum()

    async def backup(self, dest: Union[str, "os.PathLike[str]"]) -> None:
        """Copy a live SQLite queue to the file `dest` (SQLite's online backup API).
        On PostgreSQL: UnsupportedOperation (use pg_dump)."""
        try:
            path = os.fspath(dest)
        except TypeError:
            raise InvalidArgument(f"backup destination must be a path, got {dest!r}") from None
        await self._backend.backup(path)

    async def integrity_check(self) -> list[str]:
        """['ok'] when the database is sound, else the problems found: SQLite's integrity check of
        the file; on PostgreSQL the schema version, the indexes and each row's fields against its status."""
        return await self._backend.integrity_check()

    # -- wake-ups -----------------------------------------------------------

    def arm(self, wake: Callable[[], None],
            take: Optional[tuple[Callable[[], Optional[ClaimRequest]], Callable[[Task], None]]] = None) -> None:
        """Call `wake` when new work may be ready: at once for enqueues through this Queue, soon for others.

        `take`, from a Worker idle on the running event loop: (request, accept).
        enqueue() may then call request() for a ClaimRequest of one task (None: not
        now), and if the backend inserted the new task claimed by it, accept(task)
        at once, on the loop's thread; `wake` is not called for that task.
        """
        self._wakes.add(wake)
        if take is not None:
            self._takers[wake] = take
        self._backend.arm(wake)

    def disarm(self, wake: Callable[[], None]) -> None:
        """Stop calling `wake` (and its `take`)."""
        self._wakes.discard(wake)
        self._takers.pop(wake, None)
        self._backend.disarm(wake)

    def _notify(self) -> None:
        for wake in tuple(self._wakes):
            wake()


def raise_for_outcome(task: Task, outcome: str) -> None:
    """Turn a fenced write's outcome into the package's exception, if it was refused."""
    if outcome == OK:
        return
    if outcome == CANCELLED:
        task.status = TaskStatus.CANCELLED
        raise TaskCancelled(f"task {task.id} was cancelled; its result was not recorded")
    if outcome == MISSING:
        raise TaskNotFound(f"task {task.id} no longer exists")
    raise LeaseLost(f"task {task.id}: the lease of token {task.token} was lost to another claim")
