"""PostgreSQL backend: the same queue for workers on many hosts, through asyncpg.

One asyncpg connection per Queue does the work; calls on it take turns (an
asyncio lock), as calls on the SQLite backend take turns on its thread. A second
connection, opened the first time a worker waits for work, LISTENs on the
schema's channel: a trigger NOTIFYs it on every insert, and the cycle NOTIFYs it
when tasks are handed back or recovered, so idle workers wake at once instead
of polling. Only one process at a time LISTENs, the one holding the watch (a
session advisory lock); the other idle ones wait for the lock in the server:
an insert wakes one idle worker, not all of them, and the watch passes on when
that worker has no free slot. While work streams in (inserts less than a claim's
round trip apart), the holder does not LISTEN at all: its workers gather the new
work every few milliseconds, many tasks a claim, unannounced.

A worker's round trip is one statement, so one network trip and one implicit
transaction: it applies every finish record (arrays, one UPDATE per kind),
recovers expired leases, claims a batch with FOR UPDATE SKIP LOCKED and says
when the next delayed task or lease falls due. Every statement is in
sql/postgres.sql. The work connection plans them once (plan_cache_mode =
force_generic_plan): the generic plans walk the partial indexes in order, which
also marks the index entries of finished rows dead as it passes them."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from typing import Any, Callable, Optional, Sequence
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

try:
    import asyncpg
except ImportError:  # pragma: no cover - exercised only without the extra installed
    asyncpg = None

from .. import sql
from ..errors import (
    DatabaseError, InvalidArgument, QueueBusy, QueueClosed, QueueError, SchemaVersionError,
)
from ..records import C_CREATED_AT, N_IDEMPOTENCY_KEY
from ..strategy import MAX_LEVELS, PRIORITY_WALK, LevelSearch, WeightedDraw, in_claim_order
from .base import (
    COMPLETE, FAIL, FINAL_STATUS, NOT_OPEN, OK, RELEASE, RETRY,
    Backend, BackendStats, ClaimRequest, CycleResult, Finish, NewTask, TaskRow, check_durability, fence_outcome,
)

log = logging.getLogger("prismq_queue.postgres")

SCHEMA = sql.schema("postgres")
SCHEMA_VERSION = SCHEMA.version
DEFAULT_SCHEMA = "prismq"
SCHEMES = ("postgresql", "postgres")
# A schema name: a plain identifier, short enough that "prismq_<schema>" is a
# valid channel name (63 bytes at most).
SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,55}$")
TRANSIENT_RETRIES = 5
# The watch (see "notification" below): how long the holder's workers may go
# without waiting for work and without claiming before it hands the watch on.
HANDOVER_DELAY = 0.02
# While work streams in (see "notification" below): the watch's holder looks for
# it unannounced, first FIRST_LOOK_TRIPS claim round trips after the stream
# showed (GATHER_DELAY at most), then GATHER_DELAY after each claim began.
GATHER_DELAY = 0.005
FIRST_LOOK_TRIPS = 2
# The weight of the newest claim round trip in the measured one (a moving average:
# one slow trip does not make every later pair of notifications look like a stream).
TRIP_WEIGHT = 0.25
RECOVER_BATCH = 1000  # leases recovered per statement, per kind (see "cycle" in postgres.sql)
CLAIMED_COLUMNS = 9
# The strategies one cycle statement claims for, each with sql's pick_<strategy>
# (WEIGHTED_RANDOM draws its levels first: _claim_weighted).
ORDERED = ("fifo", "lifo", "priority")


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _count(status: str) -> int:
    """The row count of a command tag such as 'UPDATE 3'."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, AttributeError):
        return 0


def _clean_text(value: Optional[str]) -> Optional[str]:
    # PostgreSQL text cannot hold NUL; an error message with one must not make
    # the finish record (and so the worker's whole round trip) fail forever.
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\\x00")
    return value


def _is_secret(key: str) -> bool:
    return "password" in key.lower()  # password, sslpassword, ...


def _mask_netloc(netloc: str) -> str:
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        if ":" in userinfo:
            return userinfo.split(":", 1)[0] + ":***@" + host
    return netloc


def mask_url(url: str) -> str:
    """`url` with every password (user:password@ or ?password=) replaced by ***, for messages."""
    try:
        parts = urlsplit(url)
        query = [(k, "***" if _is_secret(k) else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        return urlunsplit((parts.scheme, _mask_netloc(parts.netloc), parts.path, urlencode(query, safe="*"),
                           parts.fragment))
    except ValueError:  # not even a URL: show nothing of it rather than a secret
        return "<unparsable URL>"


def parse_url(url: str, schema: Optional[str]) -> tuple[str, str, str]:
    """Split a postgresql:// URL into (dsn for asyncpg, schema, URL safe to print)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidArgument(f"not a valid PostgreSQL URL: {mask_url(url)} ({exc})") from None
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidArgument(f"not a PostgreSQL URL: {mask_url(url)!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [v for k, v in query if k == "schema"]
    rest = [(k, v) for k, v in query if k != "schema"]
    if len(from_url) > 1 or (from_url and schema is not None and from_url[0] != schema):
        raise InvalidArgument(f"the schema is given twice, differently, in {mask_url(url)!r} and schema={schema!r}")
    if schema is None:
        schema = from_url[0] if from_url else DEFAULT_SCHEMA
    if not isinstance(schema, str) or not SCHEMA_NAME.match(schema) or schema.lower().startswith("pg_"):
        raise InvalidArgument(f"schema must be a plain identifier (letters, digits, _; at most 56 characters; "
                              f"not starting with pg_), got {schema!r}")
    dsn = urlunsplit(("postgresql", parts.netloc, parts.path, urlencode(rest), parts.fragment))
    shown_query = [(k, "***" if _is_secret(k) else v) for k, v in rest] + [("schema", schema)]
    shown = urlunsplit(("postgresql", _mask_netloc(parts.netloc), parts.path,
                        urlencode(shown_query, quote_via=quote, safe="*"), ""))
    return dsn, schema, shown


class PostgresBackend(Backend):
    """The queue's rows in a table of a PostgreSQL schema."""

    def __init__(self, url: str, *, durability: str = "normal", busy_timeout: float = 30.0,
                 schema: Optional[str] = None, connect_timeout: float = 10.0) -> None:
        if asyncpg is None:
            raise DatabaseError("the PostgreSQL backend needs asyncpg: pip install 'prismq-queue[postgres]'")
        check_durability(durability)
        for name, seconds in (("busy_timeout", busy_timeout), ("connect_timeout", connect_timeout)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0 \
                    or not math.isfinite(seconds):
                raise InvalidArgument(f"{name} must be a number of seconds > 0, got {seconds!r}")
        self.dsn, self.schema, self.url = parse_url(url, schema)
        self._secrets = _secrets_of(self.dsn)
        self.durability = durability
        self.busy_timeout = float(busy_timeout)
        self.connect_timeout = float(connect_timeout)
        self.channel = f"prismq_{self.schema}"
        names = {"{schema}": _quote_ident(self.schema), "{channel}": _quote_literal(self.channel),
                 "{priority_walk}": str(PRIORITY_WALK)}
        self._q: dict[str, str] = {}
        for name, text in sql.load("postgres").items():
            for placeholder, value in names.items():
                text = text.replace(placeholder, value)
            self._q[name] = text
        picks = {strategy: {"pick": self._q["pick_" + strategy]} for strategy in ORDERED}
        self._cycle_sql = {strategy: sql.include(self._q["cycle"], picks[strategy]) for strategy in ORDERED}
        self._claim_sql = {strategy: sql.include(self._q["claim_cycle"], picks[strategy]) for strategy in ORDERED}
        self._complete_sql = {strategy: sql.include(self._q["complete_cycle"], picks[strategy])
                              for strategy in ORDERED}
        self._conn: Optional["asyncpg.Connection"] = None
        # The locks are made by open() and _listen(), in the loop that uses them; nothing takes them before.
        self._lock: asyncio.Lock = None  # type: ignore[assignment]
        self._rng = random.Random()
        # LISTEN side.
        self._wakes: set[Callable[[], None]] = set()
        self._listener: Optional["asyncpg.Connection"] = None
        self._listener_task: Optional[asyncio.Task] = None
        self._listener_retry_at = 0.0
        self._notifications = 0  # notifications received so far
        self._seen = 0  # ... when the last claim started
        self._watching = False  # this process holds the watch and LISTENs: notifications wake its workers
        self._waiting: Optional[asyncio.Task] = None  # waits in the server for the watch
        self._watch_lock: asyncio.Lock = None  # type: ignore[assignment]  # one watch statement at a time on the listener
        self._handover: Optional[asyncio.TimerHandle] = None
        # While work streams in, the holder UNLISTENs and its workers look for work
        # unannounced instead (see "notification" below). In an object of its own: an
        # instance of more than 30 attributes loses CPython's shared-key dict, and every
        # attribute read of the backend (enqueue's too) gets dearer.
        self._gather = _Gathering()

    # -- connection -----------------------------------------------------

    async def _connect(self, purpose: str) -> "asyncpg.Connection":
        settings = {"application_name": f"prismq_queue {purpose}"}
        if purpose == "listener":
            # Its wait for the watch is one statement that lasts as long as another
            # process holds it: a server's or role's timeouts must not cut it short.
            settings["statement_timeout"] = settings["lock_timeout"] = "0"
        if purpose == "work":
            settings["lock_timeout"] = str(max(1, int(self.busy_timeout * 1000)))
            settings["plan_cache_mode"] = "force_generic_plan"
            if self.durability == "normal":
                # As SQLite's synchronous=NORMAL: a commit does not wait for its
                # WAL flush. An application crash loses nothing; a crash of the
                # server or the machine may lose the last fraction of a second.
                settings["synchronous_commit"] = "off"
        try:
            return await asyncpg.connect(self.dsn, timeout=self.connect_timeout, server_settings=settings)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise DatabaseError(f"cannot connect to PostgreSQL at {self.url}: {type(exc).__name__}: "
                                f"{self._scrub(str(exc))}") from None

    async def open(self) -> None:
        if self._conn is not None:
            return
        conn = await self._connect("work")
        try:
            await self._setup(conn)
        except BaseException as exc:
            await self._close_quietly(conn)
            if isinstance(exc, Exception) and not isinstance(exc, QueueError):
                raise self._translate(exc) from exc
            raise
        self._conn = conn
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        if self._handover is not None:
            self._handover.cancel()
            self._handover = None
        if self._watching and self._listener is not None:
            try:  # the next waiting process gets the watch now, not when this session ends
                await asyncio.wait_for(self._hand_over(), 2)
            except BaseException:
                pass
        self._stop_looking()
        tasks = (self._listener_task, self._waiting, self._gather.switch)
        self._listener_task = self._waiting = self._gather.switch = None
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()  # (a wait for the watch: the lock goes with the session, closed below)
                try:
                    await task
                except BaseException:
                    pass
        listener, self._listener = self._listener, None
        conn, self._conn = self._conn, None
        for c in (listener, conn):
            if c is not None:
                await self._close_quietly(c)

    @staticmethod
    async def _close_quietly(conn: "asyncpg.Connection") -> None:
        try:
            await asyncio.wait_for(conn.close(), 5)
        except BaseException:
            conn.terminate()

    async def _read_version(self, conn: "asyncpg.Connection") -> int:
        table = f"{_quote_ident(self.schema)}.prismq_version"
        if not await conn.fetchval(self._q["version_table_exists"], table):
            return 0
        return await conn.fetchval(self._q["read_version"]) or 0

    def _too_new(self, version: int) -> SchemaVersionError:
        return SchemaVersionError(
            f"schema {self.schema!r} at {self.url} has version {version}, newer than this prismq_queue "
            f"understands ({SCHEMA_VERSION}); upgrade prismq_queue to open it")

    async def _setup(self, conn: "asyncpg.Connection") -> None:
        # Read the version before writing anything: a schema written by a newer
        # prismq_queue is left untouched.
        version = await self._read_version(conn)
        if version > SCHEMA_VERSION:
            raise self._too_new(version)
        if version == SCHEMA_VERSION:
            return
        async with conn.transaction():
            await conn.execute(self._q["migration_lock"], self.schema)
            if not await conn.fetchval(self._q["schema_exists"], self.schema):
                await conn.execute(self._q["create_schema"])
            await conn.execute(self._q["create_version_table"])
            version = await self._read_version(conn)  # again, under the lock: another process may have migrated
            if version > SCHEMA_VERSION:
                raise self._too_new(version)
            for target, script in SCHEMA.plan(version):  # (see prismq_queue/sql)
                await conn.execute(self._fill(script))  # a script of many statements, sent at once
                await conn.execute(self._q["set_version"], target)

    def _fill(self, script: str) -> str:
        """A schema script with this queue's schema and channel names put in (as __init__ does for statements)."""
        return (script.replace("{schema}", _quote_ident(self.schema))
                .replace("{channel}", _quote_literal(self.channel)))

    # -- running statements ---------------------------------------------

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `await fn(conn, *args)` on the work connection, one call at a time, with errors translated."""
        if self._conn is None:
            raise QueueClosed(NOT_OPEN)
        async with self._lock:
            if self._conn is None:
                raise QueueClosed("the queue was closed")
            if self._conn.is_closed():  # the server went away since: connect again
                self._conn = await self._connect("work")
            attempt = 0
            while True:
                try:
                    return await fn(self._conn, *args)
                except asyncio.CancelledError:
                    # Cancelled mid-call, the connection may be left inside a
                    # transaction (asyncpg cannot roll back while the cancelled
                    # statement is still in flight): later calls would run in it,
                    # uncommitted, or fail as "current transaction is aborted".
                    # Drop it; the server rolls back, and the next call connects again.
                    self._conn.terminate()
                    raise
                except asyncpg.TransactionRollbackError as exc:  # deadlock or serialization failure
                    attempt += 1
                    if attempt > TRANSIENT_RETRIES:
                        raise QueueBusy(f"{self.url}: gave up after {attempt} conflicting attempts: {exc}") from exc
                    await asyncio.sleep(self._rng.uniform(0.001, 0.005 * attempt))
                except QueueError:
                    raise
                except Exception as exc:
                    if _breaks_connection(exc):
                        self._conn.terminate()  # the next call connects again
                    raise self._translate(exc) from exc

    def _scrub(self, text: str) -> str:
        """`text` with the URL's passwords blotted out (a driver error may quote its connection string)."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _translate(self, exc: BaseException) -> QueueError:
        error = self._translate_unscrubbed(exc)
        text = self._scrub(str(error))
        return error if text == str(error) else type(error)(text)

    def _translate_unscrubbed(self, exc: BaseException) -> QueueError:
        if isinstance(exc, asyncpg.LockNotAvailableError):
            return QueueBusy(f"{self.url}: a row stayed locked for longer than busy_timeout "
                             f"({self.busy_timeout:g} s): {exc}")
        if isinstance(exc, (asyncpg.DataError, UnicodeEncodeError)):
            return InvalidArgument(f"PostgreSQL cannot store a value: {exc}")
        if isinstance(exc, (asyncpg.InsufficientPrivilegeError,)):
            return DatabaseError(f"{self.url}: permission denied ({exc}); the queue's user needs to create "
                                 f"and write schema {self.schema!r}")
        if _breaks_connection(exc):
            return DatabaseError(f"lost the connection to PostgreSQL at {self.url}: {type(exc).__name__}: {exc}")
        return DatabaseError(f"{self.url}: {type(exc).__name__}: {exc}")

    # -- tasks ----------------------------------------------------------

    async def insert(self, rows: Sequence[NewTask]) -> list[int]:
        columns = [list(c) for c in zip(*rows)]
        if any(key is not None for key in columns[N_IDEMPOTENCY_KEY]):
            return await self._run(self._insert_keyed, rows)
        return await self._run(self._insert_plain, columns)

    async def _insert_plain(self, conn: "asyncpg.Connection", columns: list[list]) -> list[int]:
        # One statement, so one implicit transaction; ids come from the sequence
        # in the rows' order, so sorting them gives them back in that order.
        records = await conn.fetch(self._q["insert_tasks"], *columns)
        return sorted(r[0] for r in records)

    async def _insert_keyed(self, conn: "asyncpg.Connection", rows: Sequence[NewTask]) -> list[int]:
        if len(rows) == 1:  # one row: one statement is all or nothing by itself
            return await self._insert_keyed_rows(conn, rows)
        async with conn.transaction():
            return await self._insert_keyed_rows(conn, rows)

    async def _insert_keyed_rows(self, conn: "asyncpg.Connection", rows: Sequence[NewTask]) -> list[int]:
        ids: list[Optional[int]] = [None] * len(rows)
        pending = list(range(len(rows)))
        for _ in range(10):
            batch = [rows[i] for i in pending]
            records = await conn.fetch(self._q["insert_tasks_keyed"], *[list(c) for c in zip(*batch)])
            # Inserted rows come back in the batch's order (ids ascending); a
            # keyed row that is not among them found its key held by a live task.
            inserted = sorted((r[0], r[1]) for r in records if r[2])
            live = {r[1]: r[0] for r in records if not r[2]}
            retry, j = [], 0
            for i in pending:
                key = rows[i][N_IDEMPOTENCY_KEY]
                if j < len(inserted) and inserted[j][1] == key:
                    ids[i] = inserted[j][0]
                    j += 1
                    if key is not None:
                        live[key] = ids[i]  # a later row of this batch with the same key gets it too
                elif key in live:
                    ids[i] = live[key]
                else:  # held by a task committed meanwhile: look again
                    retry.append(i)
            if not retry:
                return ids  # type: ignore[return-value]
            pending = retry
        raise QueueBusy(f"{self.url}: idempotency keys kept changing hands; try again")

    async def cycle(self, finishes: Sequence[Finish], *, claim: Optional[ClaimRequest], recover: bool,
                    now: float) -> CycleResult:
        if claim is None or claim.limit <= 0:
            return await self._run(self._cycle, finishes, None, recover, now)
        gather = self._gather
        if gather.arriving:
            # Work streams in (see "notification" below): let it gather until the
            # next look, so that one claim takes it all (and carries these finish
            # records with it) instead of one claim, and one more trip, per task.
            wait = gather.look_at - time.monotonic()
            if wait > 0:
                gather.waiting += 1  # a round trip under way: no hand-over meanwhile
                try:
                    await asyncio.sleep(wait)
                finally:
                    gather.waiting -= 1
                now = max(now, time.time())  # the claim happens now: tasks due by now are its
        began = time.monotonic()
        last, gather.claimed_at = gather.claimed_at, began
        # Notifications counted from here on may announce work this claim
        # does not see; arm() checks the count against this mark.
        self._seen = self._notifications
        result = await self._run(self._cycle, finishes, claim, recover, now)
        if len(result.claimed) < claim.limit:
            self._came_up_short(result.claimed, began, last)
        else:
            gather.look_at = 0.0  # a full batch: more is waiting, the next claim need not wait for any
        return result

    def _came_up_short(self, rows: list, began: float, last: float) -> None:
        """After a claim that took all there was, begun at `began` (the one before at `last`): gather or stop.

        Only such claims measure the round trip: it is the trip of a worker that keeps
        up with the work, the one a stream is judged against (a full batch's trip is
        longer, and a drain's claims pay nothing for it).
        """
        gather = self._gather
        trip = time.monotonic() - began
        gather.trip = trip if not gather.trip else gather.trip + (trip - gather.trip) * TRIP_WEIGHT
        if not self._watching or (len(rows) < 2 and not gather.arriving):
            return
        # Tasks inserted by one statement (an enqueue_many batch) share their created_at:
        # the distinct values count the inserts this claim found, each one notification.
        inserts = len({row[C_CREATED_AT] for row in rows})
        if gather.arriving:
            if began < gather.since:
                return  # under way when the stream showed: the first look is already set
            if inserts * gather.trip < began - last:
                self._stop_gathering()  # fewer than one insert a round trip arrived since the last claim
            else:
                gather.look_at = began + GATHER_DELAY
        elif inserts >= 2:
            self._start_gathering()  # two inserts arrived while this worker was busy: work streams in

    async def _cycle(self, conn: "asyncpg.Connection", finishes: Sequence[Finish], claim: Optional[ClaimRequest],
                     recover: bool, now: float) -> CycleResult:
        if claim is not None and claim.strategy == "weighted_random":
            async with conn.transaction():
                result, _ = await self._statement(conn, "priority", finishes, None, recover, now)
                result.claimed, next_due, next_expiry = await self._claim_weighted(conn, claim, now)
                if len(result.claimed) < claim.limit:
                    result.next_due, result.next_expiry = next_due, next_expiry
            return result
        strategy = claim.strategy if claim is not None else "priority"
        # The common case: one statement does it all (one trip, one transaction).
        result, times = await self._statement(conn, strategy, finishes, claim, recover, now)
        if claim is None and recover:
            batch = result.recovered
            while batch >= RECOVER_BATCH:  # recover(): all of them, a batch at a time
                batch = (await self._statement(conn, strategy, (), None, True, now))[0].recovered
                result.recovered += batch
        if claim is not None and result.recovered and len(result.claimed) < claim.limit:
            # Tasks recovered just now were not visible to that statement's claim.
            more = ClaimRequest(claim.worker_id, claim.limit - len(result.claimed), claim.strategy,
                                claim.lease_until, claim.token)
            extra, times = await self._statement(conn, strategy, (), more, False, now)
            result.claimed += extra.claimed
        if claim is not None:
            in_claim_order(result.claimed, strategy)  # RETURNING gives no defined order
            if len(result.claimed) < claim.limit:
                result.next_due, result.next_expiry = times
        return result

    async def _statement(self, conn: "asyncpg.Connection", strategy: str, finishes: Sequence[Finish],
                         claim: Optional[ClaimRequest], recover: bool,
                         now: float) -> tuple[CycleResult, tuple[Optional[float], Optional[float]]]:
        """Run the cycle statement once; returns its result and (next due, next lease end)."""
        if claim is None:
            wanted: tuple = (None, None, None, 0)
        else:
            wanted = (claim.lease_until, claim.token, claim.worker_id, claim.limit)
        if not finishes:
            records = await conn.fetch(self._claim_sql[strategy], now, recover, *wanted)
        elif all(finish[0] == COMPLETE for finish in finishes):  # the common case, in a leaner statement
            _, ids, tokens, values, whens = (list(column) for column in zip(*finishes))
            records = await conn.fetch(self._complete_sql[strategy], ids, tokens, values, whens, now, recover,
                                       *wanted)
        else:
            columns: dict[str, tuple[list, list, list, list]] = {k: ([], [], [], []) for k in FINAL_STATUS}
            for kind, task_id, token, value, when in finishes:
                ids, tokens, values, whens = columns[kind]
                ids.append(task_id)
                tokens.append(token)
                values.append(value if kind == COMPLETE else _clean_text(value))
                whens.append(when)
            c, r, f, rel = columns[COMPLETE], columns[RETRY], columns[FAIL], columns[RELEASE]
            records = await conn.fetch(self._cycle_sql[strategy], *c, *r, *f, rel[0], rel[1], rel[3], now,
                                       recover, *wanted)
        first = records[0]
        result = CycleResult(recovered=first[CLAIMED_COLUMNS + 1])
        if first[CLAIMED_COLUMNS] != len(finishes):
            result.outcomes = await self._fence_outcomes(
                conn, [(task_id, token, FINAL_STATUS[kind]) for kind, task_id, token, _, _ in finishes])
        result.claimed = [tuple(rec)[:CLAIMED_COLUMNS] for rec in records if rec[0] is not None]
        return result, (first[CLAIMED_COLUMNS + 2], first[CLAIMED_COLUMNS + 3])

    async def _fence_outcomes(self, conn: "asyncpg.Connection",
                              wanted: Sequence[tuple[int, Optional[int], Optional[str]]]) -> list[str]:
        # Some fenced writes were refused: read back why. A row that now holds
        # the state we asked for, under our token, was applied.
        states = {r[0]: (r[1], r[2]) for r in await conn.fetch(self._q["fence_state"], [w[0] for w in wanted])}
        return [fence_outcome(states.get(task_id), token, status) for task_id, token, status in wanted]

    async def _claim_weighted(self, conn: "asyncpg.Connection", req: ClaimRequest,
                              now: float) -> tuple[list[tuple], Optional[float], Optional[float]]:
        # The policy (which levels, how many from each) is strategy.py's; here only its SQL.
        lease_until, token, worker_id, limit = req.lease_until, req.token, req.worker_id, req.limit
        search = LevelSearch(limit)
        while not (search.walked(await conn.fetch(self._q["ready_levels"], now, limit, MAX_LEVELS, search.visits))
                   or search.read(await conn.fetch(self._q["due_levels"], now, search.rows))):
            pass
        draw = WeightedDraw(search.levels, search.target, self._rng)
        records = None
        while draws := draw.next():
            records = await conn.fetch(self._q["claim_levels"], lease_until, token, worker_id, now,
                                       sum(draws.values()), list(draws), list(draws.values()))
            draw.took([tuple(r)[:CLAIMED_COLUMNS] for r in records if r[0] is not None])
        if records is None:  # nothing was ready: still say when something will be
            records = await conn.fetch(self._q["claim_levels"], lease_until, token, worker_id, now, 0, [], [])
        return in_claim_order(draw.claimed, "weighted_random"), records[0][-2], records[0][-1]

    async def extend(self, leases: Sequence[tuple[int, Optional[int]]], lease_until: float) -> list[str]:
        return await self._run(self._extend, leases, lease_until)

    async def _extend(self, conn: "asyncpg.Connection", leases: Sequence[tuple[int, Optional[int]]],
                      lease_until: float) -> list[str]:
        if not leases:
            return []
        ids = [lease[0] for lease in leases]
        tokens = [lease[1] for lease in leases]
        done = {r[0] for r in await conn.fetch(self._q["extend_leases"], ids, tokens, lease_until)}
        if len(done) == len(set(ids)):
            return [OK] * len(leases)
        refused = [(i, t, None) for i, t in leases if i not in done]
        why = iter(await self._fence_outcomes(conn, refused))
        return [OK if i in done else next(why) for i, _ in leases]

    async def get(self, task_id: int) -> Optional[TaskRow]:
        async def op(conn):
            row = await conn.fetchrow(self._q["get_task"], task_id)
            return None if row is None else tuple(row)

        return await self._run(op)

    async def list_tasks(self, status: Optional[str], type_: Optional[str], limit: int) -> list[TaskRow]:
        async def op(conn):
            # As SQLite's LIMIT, a negative limit means no limit (LIMIT NULL).
            return [tuple(r) for r in await conn.fetch(self._q["list_tasks"], status, type_,
                                                       limit if limit >= 0 else None)]

        return await self._run(op)

    async def cancel(self, task_id: int, now: float) -> bool:
        async def op(conn):
            return _count(await conn.execute(self._q["cancel"], now, task_id)) > 0

        return await self._run(op)

    async def stats(self, now: float, windows: Sequence[float]) -> BackendStats:
        async def op(conn):
            # One snapshot for all the counts.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                counts = [tuple(r) for r in await conn.fetch(self._q["count_by_type_status"])]
                oldest = await conn.fetchval(self._q["oldest_due"], now)
                starts = {now - w: w for w in windows}
                recent: dict[float, dict[str, int]] = {w: {} for w in windows}
                for since, status, n in await conn.fetch(self._q["finished_since"], list(starts)):
                    recent[starts[since]][status] = n
            return {"counts": counts, "oldest_due": oldest, "recent": recent}

        return await self._run(op)

    async def purge(self, before: float) -> int:
        async def op(conn):
            return _count(await conn.execute(self._q["purge"], before))

        return await self._run(op)

    # -- maintenance ----------------------------------------------------

    async def vacuum(self) -> None:
        """VACUUM (ANALYZE) the task table: marks the space of purged rows for reuse."""
        async def op(conn):
            await conn.execute(self._q["vacuum"])

        await self._run(op)

    # checkpoint() and backup() are SQLite's (see Backend.supports): they raise
    # UnsupportedOperation here, with what to do instead.
    def unsupported(self, operation: str) -> str:
        if operation == "checkpoint":
            return ("checkpoint() copies SQLite's write-ahead log into its file; PostgreSQL runs "
                    "its own checkpoints, so there is nothing to do on a PostgreSQL queue")
        if operation == "backup":
            return (f"backup() copies a SQLite file; back up a PostgreSQL queue with the server's tools, e.g. "
                    f"pg_dump --schema={self.schema} (or your server's base backups / point-in-time recovery)")
        return super().unsupported(operation)

    async def integrity_check(self) -> list[str]:
        """Checks the schema version, the table's indexes and that each row's fields agree with its status."""
        return await self._run(self._integrity_problems)

    async def _integrity_problems(self, conn: "asyncpg.Connection") -> list[str]:
        problems = []
        version = await self._read_version(conn)
        if version != SCHEMA_VERSION:
            problems.append(f"schema version is {version}, expected {SCHEMA_VERSION}")
        table = f"{_quote_ident(self.schema)}.prismq_tasks"
        problems += [r[0] for r in await conn.fetch(self._q["check_indexes"], table)]
        problems += [r[0] for r in await conn.fetch(self._q["check_rows"])]
        return problems or ["ok"]

    async def check_without_opening(self) -> list[str]:
        """integrity_check() without open(): on a connection of its own, in a read-only transaction.

        open() creates a missing schema and migrates an old one; a check must do
        neither (the CLI's `check`), so a schema holding no queue is an error here.
        """
        conn = await self._connect("check")
        try:
            async with conn.transaction(readonly=True):
                table = f"{_quote_ident(self.schema)}.prismq_tasks"
                if not await conn.fetchval(self._q["version_table_exists"], table):
                    raise DatabaseError(f"{self.url}: schema {self.schema!r} holds no queue")
                return await self._integrity_problems(conn)
        except QueueError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc
        finally:
            await self._close_quietly(conn)

    # -- notification ----------------------------------------------------
    #
    # Waking every idle worker on every insert (each then runs a claim, all but
    # one in vain) costs the server more than the inserts themselves, and so does
    # delivering every notification to every idle process: each delivery wakes a
    # server backend and a client process. So only the process that holds the
    # watch, a session advisory lock taken on its LISTEN connection, LISTENs and
    # wakes its workers. Every other process with a worker waiting for work waits
    # for the lock in the server (pg_advisory_lock), not LISTENing: no
    # notification reaches it, and no query of its runs until the lock is its.
    # The holder keeps the watch while a worker of its own waits for work; once
    # none has for HANDOVER_DELAY and no round trip is under way (all slots busy)
    # it UNLISTENs and lets go, and the server gives the lock to the next waiting
    # process, which LISTENs and looks for work once (work announced while nobody
    # listened woke nobody). A holder that dies loses the lock with its session,
    # and the next waiter gets it the same way.
    #
    # Even one delivery per insert is dear: measured here, a process that only
    # LISTENs (and counts) halves the rate of single enqueues, because each
    # delivery is a server backend woken, a transaction there and a client woken,
    # on the cores the producer needs. So while work streams in, the holder
    # UNLISTENs and its workers look for it unannounced, many tasks a claim. It
    # streams when two notifications arrive within one claim round trip (measured:
    # a moving average of the trips of claims that came up short, the trips of a
    # worker that keeps up with the work), or when a claim that came up short
    # finds tasks of two or more inserts (one created_at per insert statement: an
    # enqueue_many batch counts once). A light load, a task at a time with more
    # than a round trip between them, never gathers: each task is announced and
    # claimed at once, as the first one of a stream is. While gathering, the first
    # look comes FIRST_LOOK_TRIPS round trips after the stream showed (GATHER_DELAY
    # at most), then one GATHER_DELAY after each claim began (a claim that came
    # back full claims again at once). Once a claim that came up short found fewer inserts than
    # round trips passed since the claim before it (less than about one insert a
    # round trip), the holder LISTENs again, and then looks once more if any task
    # is queued: work committed before the LISTEN took effect was announced to
    # nobody, and anything after it is. At any moment the holder either LISTENs or
    # has a look due, so no work waits longer than GATHER_DELAY for a holder with a
    # free slot.
    #
    # The holder keeps the watch while its workers claim: a worker busy with a
    # stream goes from round trip to round trip without waiting for work, and
    # each gap between two trips is no reason to hand the watch on. It hands over
    # once its workers neither waited for work nor began a claim for HANDOVER_DELAY.

    def arm(self, wake: Callable[[], None]) -> None:
        self._wakes.add(wake)
        if self._handover is not None:
            self._handover.cancel()
            self._handover = None
        if self._conn is None:
            return
        if self._listener is not None:
            if self._watching:
                if self._gather.arriving:
                    self._look_later()
                elif self._notifications != self._seen:
                    wake()  # work announced since the last claim began, which that claim may have missed
            else:
                self._wait_for_watch()
            return
        if self._listener_task is None and time.monotonic() >= self._listener_retry_at:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return
            self._listener_task = loop.create_task(self._listen())

    def disarm(self, wake: Callable[[], None]) -> None:
        self._wakes.discard(wake)
        if not self._wakes:
            if self._gather.look is not None:  # every worker went to work: each claims on its round trip anyway
                self._gather.look.cancel()
                self._gather.look = None
            if self._watching and self._handover is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    return
                # A worker disarms for every round trip, too: hand over only if none comes back.
                self._handover = loop.call_later(HANDOVER_DELAY, self._hand_over_if_busy)

    def _start_gathering(self) -> None:
        """Work streams in: UNLISTEN, and let the workers look FIRST_LOOK_TRIPS round trips from now."""
        gather = self._gather
        gather.arriving = True
        gather.since = time.monotonic()
        # (at most GATHER_DELAY: one slow trip, a pause of the process say, must not hold the work back longer)
        gather.look_at = gather.since + min(FIRST_LOOK_TRIPS * gather.trip, GATHER_DELAY)
        self._match_listening()
        if self._wakes:
            self._look_later()

    def _stop_gathering(self) -> None:
        """Work no longer streams in: LISTEN again (which looks once if a task is queued)."""
        gather = self._gather
        gather.arriving = False
        if gather.look is not None:
            gather.look.cancel()
            gather.look = None
        self._match_listening()

    def _look_later(self) -> None:
        """Work streams in: let the idle workers look when the next look is due."""
        if self._gather.look is not None:
            return
        wait = max(self._gather.look_at - time.monotonic(), 0.0)
        self._gather.look = asyncio.get_running_loop().call_later(wait, self._look_now)

    def _look_now(self) -> None:
        self._gather.look = None
        if self._watching and self._gather.arriving:
            self._fire()

    async def _listen(self) -> None:
        try:
            conn = await self._connect("listener")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("prismq_queue: cannot LISTEN on %s (%s); idle workers fall back to polling", self.url, exc)
            self._listener_task = None
            self._listener_retry_at = time.monotonic() + 1.0
            return
        if self._conn is None:  # closed while connecting
            await self._close_quietly(conn)
            return
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn
        self._watch_lock = asyncio.Lock()
        self._wait_for_watch()

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._notifications += 1
        if not self._watching:
            return
        gather = self._gather
        if gather.arriving:
            return  # sent before the UNLISTEN took effect: a look is due anyway
        now = time.monotonic()
        streaming = now - gather.notified_at < gather.trip
        gather.notified_at = now
        if streaming:
            self._start_gathering()  # two notifications within one claim round trip: work streams in
        else:
            self._fire()

    def _on_listener_lost(self, conn: Any) -> None:
        if self._listener is conn:
            self._listener = None
            self._listener_task = None
            self._watching = False  # the lock went with the session
            self._stop_looking()
            self._fire()  # let workers look, and listen again when they next wait

    def _stop_looking(self) -> None:
        """The holder no longer watches: no looks due, nothing LISTENed on a session that may be gone."""
        self._gather.arriving = self._gather.listening = False
        if self._gather.look is not None:
            self._gather.look.cancel()
            self._gather.look = None

    def _fire(self) -> None:
        for wake in list(self._wakes):
            wake()

    def _match_listening(self) -> None:
        """LISTEN or UNLISTEN, in the background, as _arriving says (one statement at a time on the listener)."""
        if self._gather.switch is None or self._gather.switch.done():
            self._gather.switch = asyncio.get_running_loop().create_task(self._switch_listening())

    async def _switch_listening(self) -> None:
        async with self._watch_lock:
            listener = self._listener
            while (listener is not None and self._is_current(listener) and self._watching
                   and self._gather.listening == self._gather.arriving):
                listen = not self._gather.arriving
                try:
                    if listen:
                        await listener.add_listener(self.channel, self._on_notify)
                    else:
                        await listener.remove_listener(self.channel, self._on_notify)
                    self._gather.listening = listen
                    # Work committed before the LISTEN took effect was announced to
                    # nobody: look if any task waits (a delayed one too: the look
                    # tells the workers when it falls due).
                    if listen and await listener.fetchval(self._q["any_queued"]):
                        self._fire()
                except Exception as exc:  # noqa: BLE001 - the session is unusable: start afresh on a new one
                    if self._is_current(listener) and not listener.is_closed():
                        log.warning("prismq_queue: LISTEN/UNLISTEN on %s failed (%s); listening again",
                                    self.url, exc)
                        listener.terminate()
                        self._on_listener_lost(listener)
                    return

    def _is_current(self, listener: Any) -> bool:
        # Not `listener is self._listener` inline: mypy reads that identity test as
        # making `listener` Optional again, after the `is not None` before it.
        return listener is self._listener

    def _wait_for_watch(self) -> None:
        """Queue in the server for the watch, in the background, if a worker here waits for work."""
        if self._listener is None or self._watching or not self._wakes:
            return
        if self._waiting is not None and not self._waiting.done():
            return
        self._waiting = asyncio.get_running_loop().create_task(self._take(self._listener))

    async def _take(self, listener: "asyncpg.Connection") -> None:
        async with self._watch_lock:
            if self._watching or listener is not self._listener:
                return
            try:
                # Blocks until the lock is this session's: the holder let go or its session ended.
                # (mypy narrows `listener` to the attribute's Optional type; it is the live listener)
                await listener.fetchval(self._q["watch_wait"])  # type: ignore[union-attr]
                await listener.add_listener(self.channel, self._on_notify)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - a lost listener is handled by _on_listener_lost
                if listener is self._listener and not listener.is_closed():
                    # Cancelled by the server (an administrator, say), the session still
                    # up: it may hold the lock now, or not. Start afresh on a new session.
                    log.warning("prismq_queue: the wait for the watch on %s failed (%s); listening again",
                                self.url, exc)
                    listener.terminate()
                    self._on_listener_lost(listener)
                return
            if listener is not self._listener:  # lost meanwhile: the lock went with it
                return
            self._watching = self._gather.listening = True
            self._gather.arriving = False
        # Work announced while nobody listened (or while the last holder was busy)
        # woke nobody: look once. Anything committed from here on is announced.
        self._fire()
        if not self._wakes:  # every worker here got busy while this process waited
            self.disarm(lambda: None)  # (starts the hand-over timer)

    def _hand_over_if_busy(self) -> None:
        self._handover = None
        if not self._watching or self._wakes or self._listener is None:
            return
        if self._gather.waiting or (self._lock is not None and self._lock.locked()):
            # A round trip is under way (a slow one, on a loaded server): its worker
            # may well come back for more work. Look again later.
            wait = HANDOVER_DELAY
        else:
            # A worker that claimed lately is busy with a stream of work, between two
            # of its round trips: it will claim again soon, so keep the watch.
            wait = self._gather.claimed_at + HANDOVER_DELAY - time.monotonic()
        if wait > 0:
            self._handover = asyncio.get_running_loop().call_later(wait, self._hand_over_if_busy)
            return
        asyncio.get_running_loop().create_task(self._hand_over())

    async def _hand_over(self) -> None:
        async with self._watch_lock:
            listener = self._listener
            if not self._watching or listener is None:
                return
            listening = self._gather.listening
            self._watching = False
            self._stop_looking()
            try:
                # UNLISTEN first: once the lock is free the next holder LISTENs, and
                # an insert must not then be delivered to both.
                if listening:
                    await listener.remove_listener(self.channel, self._on_notify)
                await listener.fetchval(self._q["watch_hand_over"])
            except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
                return
        if self._wakes:  # a worker came back meanwhile: queue again
            self._wait_for_watch()


class _Gathering:
    """The watch holder's state while work streams in faster than its workers take it (see "notification")."""

    __slots__ = ("arriving", "listening", "switch", "since", "look", "look_at", "claimed_at", "trip",
                 "notified_at", "waiting")

    def __init__(self) -> None:
        self.arriving = False  # work streams in: announcements not wanted, the workers look instead
        self.listening = False  # the listener connection's state (LISTEN done, not UNLISTENed)
        self.switch: Optional[asyncio.Task] = None  # brings `listening` in line with `arriving`
        self.since = 0.0  # when the stream showed (time.monotonic()): claims begun before it do not judge it
        self.look: Optional[asyncio.TimerHandle] = None  # the next unannounced look, for idle workers
        self.look_at = 0.0  # when the next look is due (time.monotonic()); claims wait for it
        self.claimed_at = 0.0  # when the last claim began (time.monotonic())
        self.trip = 0.0  # a claim's round trip, seconds (moving average; 0: none measured yet)
        self.notified_at = float("-inf")  # when the last notification arrived (time.monotonic())
        self.waiting = 0  # round trips waiting for work to gather before they claim


def _secrets_of(dsn: str) -> list[str]:
    """The password values in a DSN, as written and decoded, longest first (so none is left half-masked)."""
    parts = urlsplit(dsn)
    found = set()
    if parts.password:
        found.update({parts.password, unquote(parts.password)})
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if _is_secret(key) and value:
            found.update({value, quote(value, safe="")})
    return sorted((s for s in found if s), key=len, reverse=True)


def _breaks_connection(exc: BaseException) -> bool:
    """True for errors after which the connection cannot be trusted: network, server shutdown, client state."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", "") or ""
        return state.startswith("08") or state.startswith("57P")  # connection exception, operator intervention
    return not isinstance(exc, (ValueError, TypeError))  # OSError, timeouts, InterfaceError, InternalClientError

