"""SQLite backend: one file, WAL journal, one sqlite3 connection per Queue.

Every operation is a plain function run on the connection's own thread (see
sqlite_bridge), so a whole worker cycle (acknowledge, recover, claim) costs one
hop across the async bridge. Write transactions start with BEGIN IMMEDIATE: a deferred transaction
that reads and then writes fails its lock upgrade at once under contention.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import sqlite3
import time
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any, Callable, Mapping, Optional, Sequence

from .. import sql
from ..errors import DatabaseError, InvalidArgument, QueueBusy, QueueClosed, SchemaVersionError
from ..records import F_KIND, F_TASK_ID, F_VALUE, N_IDEMPOTENCY_KEY, N_PAYLOAD, ClaimedRow
from ..strategy import LEVEL_VISITS, MAX_LEVELS, LevelSearch, WeightedDraw, in_claim_order
from .base import (
    COMPLETE, FAIL, FINAL_STATUS, NOT_OPEN, OK, RELEASE, RETRY, Backend, BackendStats, ClaimRequest, CycleResult,
    Finish, NewTask, TaskRow, check_durability, fence_outcome,
)
from .sqlite_bridge import SQLiteBridge
from .sqlite_checkpointer import WAL_SIZE_LIMIT, Checkpointer
from .sqlite_watcher import ChangeWatcher

Q = sql.load("sqlite")
SCHEMA = sql.schema("sqlite")
SCHEMA_VERSION = SCHEMA.version
SQLITE_HEADER = b"SQLite format 3\x00"
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
FINISH_SQL = {COMPLETE: Q["complete"], RETRY: Q["retry"], FAIL: Q["fail"], RELEASE: Q["release"]}
# A single call may run on the event loop's thread (see _call) only if it is short:
# one row written, and no text longer than this (a payload, a result, an error) ...
SHORT_TEXT = 16 * 1024
# ... and claims at most this many tasks: an idle Worker's claim (its whole batch, 50 by
# default) when work arrives, a few hundred microseconds at most on the loop's thread,
# so that enqueue -> handler start in one process needs no hop at all.
SHORT_CLAIM = 64
# Direct calls in a row before other coroutines get a turn (~0.4 ms of single calls).
# A count, not a time: the work a sequence of calls does must not depend on the
# machine's speed or load (the cost family counts it; under cachegrind a time
# limit was reached after every call, or after some, by chance).
SHORT_RUN = 16

# Completions per statement, at most. A statement text per batch size, and each is
# worth keeping prepared (preparing one of 50 rows costs about as much as the 50
# single-row updates it replaces): up to 64 of them, which leaves room for the
# others in the connection's cache of 128 prepared statements.
COMPLETE_ROWS = 64
_kind_of = itemgetter(F_KIND)
_task_id_of = itemgetter(F_TASK_ID)


def _complete_many(c: sqlite3.Connection, records: Sequence[Finish]) -> int:
    """Apply completion records, each for a different task, COMPLETE_ROWS to a statement; the rows changed."""
    applied = 0
    for start in range(0, len(records), COMPLETE_ROWS):
        chunk = records[start:start + COMPLETE_ROWS]
        # bound as the records are, five values each, flattened in C
        applied += c.execute(_complete_many_sql(len(chunk)), list(chain.from_iterable(chunk))).rowcount
    return applied


@lru_cache(maxsize=COMPLETE_ROWS)
def _complete_many_sql(rows: int) -> str:
    return Q["complete_many"].format(rows=", ".join(["(?, ?, ?, ?, ?)"] * rows))


_BUSY = object()  # what SQLiteBackend._here returns when the call must go to the bridge's thread


class _NotHere(Exception):
    """A short call found, on the loop's thread, that its work is long after all: _call rolls it back and hops."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc)
    return "locked" in text or "busy" in text


def _inserted_id(cursor: sqlite3.Cursor) -> int:
    """The id the one row an INSERT just added got (sqlite3 sets lastrowid after each successful INSERT)."""
    task_id = cursor.lastrowid
    assert task_id is not None
    return task_id


def split_script(script: str) -> list[str]:
    """The statements of a script, one per execute(): sqlite3's executescript would commit first."""
    statements, pending = [], ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise ValueError(f"unfinished SQL statement: {pending.strip()[:80]!r}")
    return statements


def check_location(path: str) -> None:
    """Refuse a path that SQLite would fail on, or a file that is not a database, before touching it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(directory):
        raise DatabaseError(f"cannot open queue {path!r}: directory {directory!r} does not exist")
    if not os.path.isdir(directory):
        raise DatabaseError(f"cannot open queue {path!r}: {directory!r} is not a directory")
    if os.path.isdir(path):
        raise DatabaseError(f"cannot open queue {path!r}: it is a directory")
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as f:
            if f.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise DatabaseError(f"cannot open queue {path!r}: the file is not a SQLite database")


class SQLiteBackend(Backend):
    """The queue's rows in one SQLite file."""

    def __init__(self, path: str, *, durability: str = "normal", busy_timeout: float = 30.0,
                 watch_interval: float = 0.001) -> None:
        if path == ":memory:" or not path:
            raise DatabaseError("a queue needs a file on disk; ':memory:' cannot be shared by workers")
        check_durability(durability)
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, (int, float)) \
                or not 0 <= busy_timeout < math.inf:  # NaN would never time out
            raise InvalidArgument(f"busy_timeout must be a finite number of seconds >= 0, got {busy_timeout!r}")
        self.path = path
        self.url = f"sqlite:///{path}"
        self.durability = durability
        self.busy_timeout = busy_timeout
        self._watch_interval = watch_interval
        self._bridge: Optional[SQLiteBridge] = None
        # None only while closed, and every use goes through _call, which refuses then.
        self._raw: sqlite3.Connection = None  # type: ignore[assignment]
        self._watcher: Optional[ChangeWatcher] = None
        self._checkpointer: Optional[Checkpointer] = None
        self._rng = random.Random()
        #: inserts of this process in flight (see insert() and the change watcher)
        self.local_writes = 0
        self._direct_run = 0  # direct calls in a row: since the last turn, hop or arm() (see _call)
        self._inserts = 0  # inserts committed through this connection (see ChangeWatcher)

    # -- connection -----------------------------------------------------

    async def open(self) -> None:
        if self._bridge is not None:  # already open: a second connection would only leak
            return
        # Resolved once: the checkpointer and the change watcher open the file
        # again later, from other threads, after the application may have chdir'd.
        self.path = os.path.abspath(self.path)
        check_location(self.path)
        bridge = SQLiteBridge(self._connect)
        try:
            self._raw = await bridge.open()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open queue {self.path!r}: {exc}") from exc
        try:
            self._bridge = bridge
            await self._call(self._setup)
            self._checkpointer = Checkpointer(self.path)
        except BaseException:
            self._bridge = self._raw = None  # type: ignore[assignment]
            await bridge.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        # busy_timeout 0: waiting for another writer is _retrying's job, with its
        # own fair, short sleeps. check_same_thread off: the connection moves
        # between the bridge's thread and the loop's, one user at a time.
        return sqlite3.connect(self.path, isolation_level=None, timeout=0, check_same_thread=False)

    async def close(self) -> None:
        for helper in (self._watcher, self._checkpointer):
            if helper is not None:
                helper.stop()
        self._watcher = self._checkpointer = None
        if self._bridge is not None:
            bridge, self._bridge, self._raw = self._bridge, None, None  # type: ignore[assignment]
            await bridge.close()

    def _setup(self) -> None:
        c = self._raw
        # Read the version before anything can write to the file: a file from a
        # newer prismq_queue, or one that is not a database, is left untouched.
        version = self._read_version(c)
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{self.path!r} has schema version {version}, newer than this prismq_queue "
                f"understands ({SCHEMA_VERSION}); upgrade prismq_queue to open it")
        c.execute("PRAGMA synchronous = " + SYNCHRONOUS[self.durability])
        c.execute("PRAGMA temp_store = MEMORY")
        c.execute("PRAGMA cache_size = -16000")
        c.execute("PRAGMA wal_autocheckpoint = 0")  # the Checkpointer thread does it, off the commit path
        c.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}").fetchall()  # a restarted log sheds a burst
        if c.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            c.execute("PRAGMA journal_mode = WAL").fetchall()
        if version < SCHEMA_VERSION:
            self._transaction(self._migrate)

    @staticmethod
    def _read_version(c: sqlite3.Connection) -> int:
        return c.execute(Q["read_version"]).fetchone()[0]

    def _migrate(self, c: sqlite3.Connection) -> None:
        """Bring the file to SCHEMA_VERSION (see prismq_queue/sql): all steps in one transaction."""
        version = self._read_version(c)  # again, under the write lock: another process may have migrated
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(f"{self.path!r} has schema version {version}, newer than {SCHEMA_VERSION}")
        for target, script in SCHEMA.plan(version):
            for statement in split_script(script):
                c.execute(statement)
            c.execute(Q["set_version"].format(version=target))

    async def _call(self, fn: Callable[..., Any], *args: Any, short: Any = False) -> Any:
        """Run fn(*args), retrying while other writers hold the lock.

        A hop to the connection's thread costs two cross-thread wake-ups, far more
        than a short statement. So a `short` call runs right here on the loop's
        thread when the bridge is idle and the connection gets what it needs at
        once (busy_timeout is 0). If another connection holds the lock, it goes to
        the thread, which waits there: the loop never waits on a lock. A call that
        finds its work long after all (expired leases to recover) raises _NotHere
        and goes to the thread too.
        """
        bridge = self._bridge
        if bridge is None:
            raise QueueClosed(NOT_OPEN)
        if short and bridge.idle:
            try:
                result = fn(*args)
                # A call that never leaves the loop's thread never lets other
                # coroutines run either: a loop of them would starve the loop.
                # Give it a turn after SHORT_RUN of them in a row (see arm()).
                self._direct_run += 1
                if self._direct_run >= SHORT_RUN:
                    await asyncio.sleep(0)
                    self._direct_run = 0
                return result
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._error(exc) from exc
            except _NotHere:
                pass
            except (sqlite3.Error, UnicodeEncodeError) as exc:
                raise self._error(exc) from (exc if isinstance(exc, sqlite3.Error) else None)
        self._direct_run = 0  # (a hop lets the loop run other coroutines)
        return await bridge.run(self._retrying, fn, *args)

    def _here(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the loop's thread, or _BUSY if another connection holds a lock it needs.

        What _call does for a short call, for the hand-off (insert_handed), which must
        know whether it ran here. (_call keeps its own copy: one more Python call
        there costs a single get() 5% more instructions.) Only while the bridge is
        idle: nothing else uses the connection then.
        """
        try:
            return fn(*args)
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise self._error(exc) from exc
        except (sqlite3.Error, UnicodeEncodeError) as exc:
            raise self._error(exc) from (exc if isinstance(exc, sqlite3.Error) else None)
        return _BUSY

    def _error(self, exc: Exception) -> Exception:
        """The package's exception for a failed statement."""
        if isinstance(exc, UnicodeEncodeError):  # e.g. a lone surrogate in a type name or payload
            return InvalidArgument(f"text that is not valid Unicode cannot be stored: {exc}")
        return DatabaseError(f"{self.path}: {exc}")

    def _retrying(self, fn: Callable[..., Any], *args: Any) -> Any:
        # SQLite's own busy handler sleeps in growing steps (up to 100 ms), so the
        # process that just committed tends to win the lock again and again. Short,
        # jittered sleeps of our own give every waiting process a fair chance.
        deadline = None
        pause = 0.0001
        while True:
            try:
                return fn(*args)
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._error(exc) from exc
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.busy_timeout
                elif now >= deadline:
                    raise QueueBusy(f"{self.path}: database stayed locked for {self.busy_timeout:.0f} s") from exc
                time.sleep(self._rng.uniform(pause / 2, pause))
                pause = min(pause * 2, 0.001)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            except UnicodeEncodeError as exc:
                raise self._error(exc) from None

    def _transaction(self, fn: Callable[..., Any], *args: Any) -> Any:
        c = self._raw
        c.execute("BEGIN IMMEDIATE")
        try:
            result = fn(c, *args)
            c.execute("COMMIT")
            return result
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise

    async def _write(self, fn: Callable[..., Any], *args: Any, short: Any = False) -> Any:
        # Under durability="full" every COMMIT waits for an fsync: never on the loop's thread.
        return await self._call(self._transaction, fn, *args, short=short if self.durability == "normal" else False)

    # -- tasks ----------------------------------------------------------

    async def insert(self, rows: Sequence[NewTask]) -> list[int]:
        # Counted while in flight: the change watcher leaves this process's own
        # enqueues to the Queue, which wakes its workers itself, at once.
        self.local_writes += 1
        try:
            if len(rows) == 1 and rows[0][N_IDEMPOTENCY_KEY] is None:
                # _insert runs one statement (insert_one) for it, which needs no BEGIN
                # and COMMIT around it: on its own it is a transaction, and two
                # statements fewer per enqueue.
                ids = await self._call(self._insert, self._raw, rows,
                                       short=self.durability == "normal" and len(rows[0][N_PAYLOAD]) <= SHORT_TEXT)
            else:
                ids = await self._write(self._insert, rows)
        finally:
            self.local_writes -= 1
        self._inserts += 1
        return ids

    async def insert_handed(self, row: NewTask, claim: ClaimRequest,
                            deliver: Callable[[ClaimedRow], None]) -> int:
        """Insert one task; if a claim made now would take exactly it, insert it claimed per `claim`.

        The local hand-off: a Worker of this process sits idle on this event loop
        with a free slot, so it would claim the new task at once anyway. Inserting
        the row already claimed, in the insert's own transaction, spares that claim's
        transaction and its wake-up. The row is then exactly what the claim would
        have written (see insert_claimed), so leases, fencing, retries and crash
        recovery treat it as any claimed task; it is handed over only if no due
        queued task or expired lease exists (checked by insert_claimed itself), i.e.
        only if the claim would have picked this task and nothing else, under any
        strategy.

        Only where the hand-off cannot be delayed: on the loop's thread, with the
        bridge idle, under durability "normal" (a "full" COMMIT waits for an fsync,
        never on the loop's thread). There `deliver(claimed_row)` is called right
        after the COMMIT, before anything else runs on the loop, so the worker that
        was idle when the caller chose it still is. Anywhere else (or if another
        connection holds the lock) the task is inserted queued, as insert() does,
        and deliver is not called.
        """
        bridge = self._bridge
        if bridge is None:
            raise QueueClosed(NOT_OPEN)
        if bridge.idle and self.durability == "normal" and len(row[N_PAYLOAD]) <= SHORT_TEXT \
                and row[N_IDEMPOTENCY_KEY] is None:
            done = self._here(self._insert_handed, row, claim)
            if done is not _BUSY:
                self._inserts += 1
                task_id, claimed = done
                if claimed is not None:
                    deliver(claimed)
                self._direct_run += 1  # the turn rule of _call
                if self._direct_run >= SHORT_RUN:
                    await asyncio.sleep(0)
                    self._direct_run = 0
                return task_id
        return (await self.insert([row]))[0]

    def _insert_handed(self, row: NewTask, claim: ClaimRequest) -> tuple[int, Optional[ClaimedRow]]:
        """Insert `row` (no idempotency key) claimed per `claim` if a claim now would take it alone, else queued.

        Each statement is a transaction of its own (no BEGIN, no COMMIT): the usual
        hand-off is the one statement insert_claimed. When that inserts nothing, it
        wrote nothing either, and insert_one then inserts the task queued. If
        another connection holds the write lock, either one fails at once (busy
        timeout 0) before it wrote anything, and the caller inserts the row queued.
        """
        c = self._raw
        # The time a claim made now would use: a delayed task that became due a
        # moment ago counts, and the new row is due by then.
        now = time.time()
        task_type, payload, priority, run_at, max_attempts, created_at, key = row
        if run_at <= now:
            cursor = c.execute(Q["insert_claimed"], (task_type, payload, priority, run_at, max_attempts, created_at,
                                                     claim.lease_until, claim.token, claim.worker_id, now))
            if cursor.rowcount:
                task_id = _inserted_id(cursor)
                return task_id, (task_id, task_type, payload, priority, 1, max_attempts, run_at, created_at, key)
        return _inserted_id(c.execute(Q["insert_one"], row)), None

    @staticmethod
    def _insert(c: sqlite3.Connection, rows: Sequence[NewTask]) -> list[int]:
        if len(rows) == 1 and rows[0][N_IDEMPOTENCY_KEY] is None:
            return [_inserted_id(c.execute(Q["insert_one"], rows[0]))]  # one statement: see insert_one
        top, floor = c.execute(Q["id_range"]).fetchone()
        first = max(top, floor) + 1  # above every id ever given, purged ones included
        if all(row[N_IDEMPOTENCY_KEY] is None for row in rows):
            # Without keys nothing can conflict: one executemany, and the ids are
            # first .. first+n-1 (each row takes the largest id plus one, and we
            # hold the write lock). Checked, because ids are what callers keep.
            last = first + len(rows) - 1
            if floor > top:
                # purge() deleted the newest tasks, whose ids SQLite would give
                # again: the first row takes its id explicitly, the rest follow.
                c.execute(Q["insert_task"], (first, *rows[0]))
                rows = rows[1:]
            c.executemany(Q["insert_plain"], rows)
            if c.execute(Q["max_id"]).fetchone()[0] != last:
                raise DatabaseError("row ids were not assigned consecutively; the batch was rolled back")
            return list(range(first, last + 1))
        ids = []
        next_id = first
        for row in rows:
            if c.execute(Q["insert_task"], (next_id, *row)).rowcount:
                ids.append(next_id)
                next_id += 1
            else:  # a live task holds this idempotency key
                ids.append(c.execute(Q["id_by_key"], (row[N_IDEMPOTENCY_KEY],)).fetchone()[0])
        return ids

    async def cycle(self, finishes: Sequence[Finish], *, claim: Optional[ClaimRequest], recover: bool,
                    now: float) -> CycleResult:
        # Expired leases to recover may be any number of rows: _cycle finds out inside
        # its transaction and, on the loop's thread, sends itself to the bridge's.
        short = (len(finishes) <= 1 and (claim is None or claim.limit <= SHORT_CLAIM)
                 and all(len(f[F_VALUE] or "") <= SHORT_TEXT for f in finishes))
        return await self._write(self._cycle, finishes, claim, recover, now, short=short)

    def _cycle(self, c: sqlite3.Connection, finishes: Sequence[Finish], claim: Optional[ClaimRequest],
               recover: bool, now: float) -> CycleResult:
        result = CycleResult()
        if finishes:
            result.outcomes = self._finish(c, finishes)
        if recover:
            # Usually no lease has expired: one seek says so, where the two recovering
            # UPDATEs are two statements (each its bindings, step and reset).
            expiry = c.execute(Q["next_lease_expiry"]).fetchone()[0]
            if expiry is not None and expiry < now:
                if not self._bridge.on_its_thread():  # type: ignore[union-attr]  # open: _call checked
                    raise _NotHere  # (rolled back: nothing was written)
                params = {"now": now}
                result.recovered = (c.execute(Q["recover_exhausted"], params).rowcount
                                    + c.execute(Q["recover_requeue"], params).rowcount)
        if claim is not None and claim.limit > 0:
            result.claimed = self._claim(c, claim, now)
            if len(result.claimed) < claim.limit:
                result.next_due, result.next_expiry = c.execute(Q["next_moments"]).fetchone()
        return result

    @staticmethod
    def _finish(c: sqlite3.Connection, finishes: Sequence[Finish]) -> Optional[list[str]]:
        kinds = set(map(_kind_of, finishes))
        by_kind: Mapping[str, Sequence[Finish]]
        if len(kinds) == 1:  # a drain's batch: all completions, grouped without a loop in Python
            by_kind = {kinds.pop(): finishes}
        else:  # kinds in the order they first come, as they are applied
            groups: dict[str, list[Finish]] = {}
            for record in finishes:
                groups.setdefault(record[F_KIND], []).append(record)
            by_kind = groups
        applied = 0
        for kind, records in by_kind.items():
            if kind == COMPLETE and len(records) > 1 and len(set(map(_task_id_of, records))) == len(records):
                applied += _complete_many(c, records)
                continue
            if kind == RELEASE:
                cur = c.executemany(FINISH_SQL[kind], [(when, task_id, token)
                                                       for _, task_id, token, _, when in records])
            else:
                cur = c.executemany(FINISH_SQL[kind], [(value, when, task_id, token)
                                                       for _, task_id, token, value, when in records])
            applied += cur.rowcount
        if applied == len(finishes):
            return None  # the common case: every lease was still ours
        # Some were refused: read back why. A row that now holds the state we
        # asked for, under our token, was applied.
        outcomes = []
        for kind, task_id, token, _value, _when in finishes:
            row = c.execute(Q["fence_state"], (task_id,)).fetchone()
            outcomes.append(fence_outcome(row, token, FINAL_STATUS[kind]))
        return outcomes

    def _claim(self, c: sqlite3.Connection, req: ClaimRequest, now: float) -> list[tuple]:
        params = {"lease_until": req.lease_until, "token": req.token, "worker_id": req.worker_id,
                  "now": now, "limit": req.limit}
        if req.strategy == "priority":
            return self._claim_priority(c, params)
        if req.strategy == "weighted_random":
            return self._claim_weighted(c, params)
        return self._claim_by_due(c, params, lifo=req.strategy == "lifo")

    @staticmethod
    def _levels(c: sqlite3.Connection, visits: int):
        """The priority levels that hold queued tasks, lowest first, one index seek each.

        At most `visits` of them; then None, if more remain: the walk got long.
        """
        level = c.execute(Q["first_level"]).fetchone()[0]
        while level is not None:
            if visits == 0:
                yield None
                return
            visits -= 1
            yield level
            level = c.execute(Q["next_level"], (level,)).fetchone()[0]

    def _claim_priority(self, c: sqlite3.Connection, params: dict) -> list[tuple]:
        # Level by level, lowest number first; FIFO within a level. A level whose
        # tasks are all delayed costs one empty range lookup: cheap while the
        # levels are few (the common case, a worker's drain), so they are walked
        # first. A walk that gets long (levels of delayed tasks) hands over to
        # LevelSearch, whose cost follows the levels that hold due work.
        claimed: list[tuple] = []
        wanted = params["limit"]
        for level in self._levels(c, LEVEL_VISITS):
            if level is None:
                return in_claim_order(claimed + self._claim_searched(c, params, wanted - len(claimed)), "priority")
            claimed += c.execute(Q["claim_level"], {**params, "priority": level,
                                                    "limit": wanted - len(claimed)}).fetchall()
            if len(claimed) == wanted:
                break
        return in_claim_order(claimed, "priority")

    def _claim_searched(self, c: sqlite3.Connection, params: dict, wanted: int) -> list[tuple]:
        """PRIORITY past a long walk: the lowest levels holding due tasks, found by LevelSearch.

        The levels walked before hold no due task any more (each gave all it had),
        so the lowest due levels now are the next ones in PRIORITY's order.
        """
        claimed: list[tuple] = []
        now = params["now"]
        while wanted > len(claimed):
            search = LevelSearch(wanted - len(claimed))
            while not (search.walked(c.execute(Q["ready_levels"], {"now": now, "limit": search.limit,
                                                                   "max_levels": MAX_LEVELS,
                                                                   "visits": search.visits}).fetchall())
                       or search.read(c.execute(Q["due_levels"], {"now": now, "rows": search.rows}).fetchall())):
                pass
            if not search.levels:
                break
            for level in search.levels:
                claimed += c.execute(Q["claim_level"], {**params, "priority": level,
                                                        "limit": wanted - len(claimed)}).fetchall()
                if len(claimed) == wanted:
                    break
        return claimed

    def _claim_by_due(self, c: sqlite3.Connection, params: dict, lifo: bool) -> list[tuple]:
        # Each level offers its first `limit` due tasks; the merge keeps the
        # `limit` earliest (FIFO) or latest (LIFO) across levels. Cheap while the
        # levels are few; a walk that gets long (levels of delayed tasks) hands
        # over to reading the due tasks in due-time order from prismq_ready_time.
        sql, limit, now = Q["level_heads_lifo" if lifo else "level_heads_fifo"], params["limit"], params["now"]
        heads: list[tuple] = []
        for level in self._levels(c, LEVEL_VISITS):
            if level is None:
                heads = c.execute(Q["due_heads_lifo" if lifo else "due_heads_fifo"], (now, limit)).fetchall()
                break
            heads += c.execute(sql, (level, now, limit))
        heads.sort(reverse=lifo)
        ids = [task_id for _, task_id in heads[:limit]]
        if not ids:
            return []
        return in_claim_order(c.execute(Q["claim_ids"], {**params, "ids": json.dumps(ids)}).fetchall(),
                              "lifo" if lifo else "fifo")

    def _claim_weighted(self, c: sqlite3.Connection, params: dict) -> list[tuple]:
        # The policy (which levels, how many from each) is strategy.py's; here only its SQL.
        search, now = LevelSearch(params["limit"]), params["now"]
        while not (search.walked(c.execute(Q["ready_levels"], {"now": now, "limit": params["limit"],
                                                               "max_levels": MAX_LEVELS,
                                                               "visits": search.visits}).fetchall())
                   or search.read(c.execute(Q["due_levels"], {"now": now, "rows": search.rows}).fetchall())):
            pass
        draw = WeightedDraw(search.levels, search.target, self._rng)
        while draws := draw.next():
            draw.took([row for level, n in draws.items()
                       for row in c.execute(Q["claim_level"], {**params, "priority": level, "limit": n})])
        return in_claim_order(draw.claimed, "weighted_random")

    async def extend(self, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        return await self._write(self._extend, leases, lease_until)

    @staticmethod
    def _extend(c: sqlite3.Connection, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        outcomes = []
        for task_id, token in leases:
            if c.execute(Q["extend_lease"], (lease_until, task_id, token)).rowcount:
                outcomes.append(OK)
            else:
                outcomes.append(fence_outcome(c.execute(Q["fence_state"], (task_id,)).fetchone(), token, None))
        return outcomes

    async def get(self, task_id: int) -> Optional[TaskRow]:
        return await self._call(lambda: self._raw.execute(Q["get_task"], (task_id,)).fetchone(), short=True)

    async def list_tasks(self, status: Optional[str], type_: Optional[str], limit: int) -> list[TaskRow]:
        params = {"status": status, "type": type_, "limit": limit}
        return await self._call(lambda: self._raw.execute(Q["list_tasks"], params).fetchall())

    async def cancel(self, task_id: int, now: float) -> bool:
        return await self._write(lambda c: c.execute(Q["cancel"], (now, task_id)).rowcount > 0, short=True)

    async def stats(self, now: float, windows: Sequence[float]) -> BackendStats:
        return await self._call(self._transaction_read, self._stats, now, windows)

    def _transaction_read(self, fn: Callable[..., Any], *args: Any) -> Any:
        # One read transaction, so that all the counts come from one snapshot.
        c = self._raw
        c.execute("BEGIN")
        try:
            return fn(c, *args)
        finally:
            c.execute("COMMIT")

    @staticmethod
    def _stats(c: sqlite3.Connection, now: float, windows: Sequence[float]) -> BackendStats:
        cutoffs = {f"w{i + 1}": now - w for i, w in enumerate(windows)}
        counts: list[tuple] = []
        recent: dict[float, dict[str, int]] = {w: {} for w in windows}
        for task_type, status, n, *in_windows in c.execute(Q["count_by_type_status"], cutoffs):
            counts.append((task_type, status, n))
            for window, k in zip(windows, in_windows):
                if k:
                    recent[window][status] = recent[window].get(status, 0) + k
        return {"counts": counts, "oldest_due": c.execute(Q["oldest_due"], (now,)).fetchone()[0], "recent": recent}

    async def purge(self, before: float) -> int:
        return await self._write(self._purge, before)

    @staticmethod
    def _purge(c: sqlite3.Connection, before: float) -> int:
        c.execute(Q["raise_id_floor"])  # the ids of purged tasks are never given again
        return c.execute(Q["purge"], (before,)).rowcount

    # -- maintenance ----------------------------------------------------

    async def checkpoint(self, mode: str = "TRUNCATE") -> tuple[int, int, int]:
        """Run a WAL checkpoint; returns (busy, wal pages, pages checkpointed)."""
        if mode.upper() not in {"PASSIVE", "FULL", "RESTART", "TRUNCATE"}:
            raise InvalidArgument(f"unknown checkpoint mode {mode!r}")
        return await self._call(lambda: tuple(self._raw.execute(f"PRAGMA wal_checkpoint({mode.upper()})").fetchone()))

    async def vacuum(self) -> None:
        await self._call(lambda: self._raw.execute("VACUUM"))

    async def backup(self, dest: str) -> None:
        check_location(dest)
        if os.path.abspath(dest) == os.path.abspath(self.path):
            raise InvalidArgument("backup destination is the queue's own file")

        def run() -> None:
            target = sqlite3.connect(dest)
            try:
                self._raw.backup(target)
            finally:
                target.close()

        await self._call(run)

    async def integrity_check(self) -> list[str]:
        rows = await self._call(lambda: self._raw.execute("PRAGMA integrity_check").fetchall())
        return [r[0] for r in rows]

    # -- notification ----------------------------------------------------

    def arm(self, wake: Callable[[], None]) -> None:
        # A worker arms as it starts to wait for work: the loop runs other coroutines
        # then, so its calls are no longer "in a row" (_call's turn rule). Without
        # this, one claim in eight of a worker taking tasks now and then paid the
        # turn: three more rounds of the loop before its handler started.
        self._direct_run = 0
        if self._watcher is None:
            self._watcher = ChangeWatcher(self.path, Q["look"], self._watch_interval,
                                          local_write=lambda: self.local_writes > 0,
                                          local_inserts=lambda: self._inserts,
                                          outside_version=self._outside_version)
        self._watcher.arm(wake)

    def _outside_version(self) -> Optional[int]:
        """data_version of this process's connection: it changes only when another connection commits.

        Read on the loop's thread, so only while the bridge is idle (None otherwise).
        """
        if self._bridge is None or not self._bridge.idle:
            return None
        try:
            return self._raw.execute("PRAGMA data_version").fetchall()[0][0]
        except sqlite3.Error:
            return None

    def disarm(self, wake: Callable[[], None]) -> None:
        if self._watcher is not None:
            self._watcher.disarm(wake)

