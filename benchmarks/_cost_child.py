"""The workloads of the cost family, run in a child process (benchmarks/cost.py).

    python _cost_child.py prepare PLAN.json   fill every queue the plan's runs will use
    python _cost_child.py run PLAN.json K     run K of the plan (under cachegrind)
    python _cost_child.py forks PLAN.json     every run of the plan, each in a child forked
                                              after start-up (under cachegrind); prints "K PID"
    python _cost_child.py profile PLAN.json K run K with a deterministic profile, print JSON
    python _cost_child.py bytecodes PLAN.json K  run K, print the bytecodes it executed
    python _cost_child.py drop PLAN.json      drop the plan's PostgreSQL schemas

A plan (written by cost.py) is {"runs": [{"op": {"loc": location, "n": count}, ...}, ...]}.
Each op works on a queue location of its own (a SQLite file, or a PostgreSQL URL with a
schema of its own), prepared beforehand outside cachegrind, so a counted run contains only
interpreter start-up, opening/closing the queues, and the operations themselves; start-up
and open/close are the same in every run and cancel in cost.py's differences.

Uses only the public API that every commit of prismq_queue has (Queue, Worker, enqueue,
enqueue_many, claim, complete, get, stats, run(until_empty=True)); payloads are pinned.
Not a benchmark module (leading underscore): asv does not collect it.
"""
import asyncio
import inspect
import json
import os
import sys

# Ops that need tasks in the queue before they run, and how many (n: the op's own count).
READY = {"drain": "n", "claim_complete": "n", "get": 100, "stats": 100,
         "pg_drain": "n", "pg_enqueue": 0, "enqueue": 0, "enqueue_many": 0}
MANY_BATCH = 100  # enqueue_many: tasks per call


def _items(n, start=0):
    return [("t", {"i": i}) for i in range(start, start + n)]


async def _prepare_one(pq, op, loc, n):
    ready = READY[op]
    count = n if ready == "n" else ready
    async with pq.Queue(loc) as q:
        ids = []
        for start in range(0, count, 1000):
            ids += list(await q.enqueue_many(_items(min(1000, count - start), start)))
    if "://" in loc:
        await settle_server_statistics(loc)
        if op == "pg_drain":
            await delay_replies(loc)
    return ids


# How long the server holds back its reply to each statement that updates a drain's
# tasks (delay_replies). Natively the client has long gone idle by then; 50 ms covers the
# client's few thousand instructions from sending to waiting under cachegrind (~30x
# slower), with room for a loaded machine's scheduling delays. ~1 s a count (~24 trips).
REPLY_DELAY = 0.05


def _schema_of(loc):
    return loc.rsplit("schema=", 1)[1].split("&")[0]


async def delay_replies(loc):
    """Make every trip of a drain find the client waiting for the reply, as it does natively.

    A Worker sends its round trip (acknowledge, claim) and goes on with its step: one more
    event-loop turn, then it waits in the selector. Natively the server's reply comes well
    after that; under cachegrind the client is ~30x slower, and whether the reply was
    already in the socket when that turn polled it (the turn then reads it, one loop turn
    fewer, ~20k instructions) depended on the server's timing: measured, 3 to 16 of the
    72 replies of a 1,100-task drain's process (one read each), so the drain figure of
    runs of the same code stayed 0.17-0.27% apart after settle_server_statistics. (The
    first use of each statement adds a prepare trip, which still races: one or two a
    process.) A statement-level trigger on the drain queue's
    tables, before any UPDATE, sleeps REPLY_DELAY once per transaction (the cycle is one
    statement, so once per trip): the server's work and the client's are unchanged; the
    reply just always comes after the client waits. Only the drain queues get it (they
    live only for the count); enqueue's one-statement trips do not race like this."""
    import asyncpg

    schema = _schema_of(loc)
    conn = await asyncpg.connect(loc.split("?")[0])
    try:
        await conn.execute(f"""
CREATE FUNCTION "{schema}".prismq_cost_reply_delay() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF current_setting('prismq_cost.delayed', true) IS DISTINCT FROM 'on' THEN
        PERFORM set_config('prismq_cost.delayed', 'on', true);  -- until the transaction ends
        PERFORM pg_sleep({REPLY_DELAY});
    END IF;
    RETURN NULL;
END $fn$""")
        for (table,) in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema):
            await conn.execute(f'CREATE TRIGGER prismq_cost_reply_delay BEFORE UPDATE ON "{schema}"."{table}" '
                               f'FOR EACH STATEMENT EXECUTE PROCEDURE "{schema}".prismq_cost_reply_delay()')
    finally:
        await conn.close()


async def settle_server_statistics(loc):
    """Give the server's planner the same statistics on every run: analyzed now, and no
    autovacuum on these tables afterwards.

    The claim's UPDATE ... RETURNING hands its rows back in the order of the plan the
    server picks, and the client sorts them (strategy.in_claim_order): rows that come
    back in order cost ~50 comparisons a batch of 50, shuffled ones ~250. The plan
    follows the table's statistics, and whether autovacuum had analyzed the freshly
    filled table before or during the drain depended on when its launcher woke up
    (once a minute): measured, the client's drain figure came out 58.5k or 60.1k
    instructions per task, 2.7% apart, by that alone. Analyzed once here, with
    autovacuum off for these tables (which live only for the count), every count sees
    the same plan. The work counted is still the client's whole drain."""
    import asyncpg

    schema = _schema_of(loc)
    conn = await asyncpg.connect(loc.split("?")[0])
    try:
        tables = [r[0] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema)]
        for table in tables:
            name = f'"{schema}"."{table}"'
            await conn.execute(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
            await conn.execute(f"ANALYZE {name}")
    finally:
        await conn.close()


async def _noop(task):
    return None


# Worker options for a count, each passed where this commit's Worker has it. Signal
# handlers are irrelevant to the count. The heartbeat extends the running tasks' leases
# every heartbeat_interval (lease_seconds / 3) of wall-clock time: natively a drain
# here is over long before the first beat, but under cachegrind (~30x slower, more on
# a loaded machine) a beat came in some runs and not in others and moved drain by ~1%
# (and every figure whose baseline run holds a drain). An hour apart, it never beats
# during a count: the count holds the drain's own work, as natively.
WORKER_OPTIONS = {"handle_signals": False, "lease_seconds": 3 * 3600.0, "heartbeat_interval": 3600.0}


def _worker(pq, q):
    accepted = inspect.signature(pq.Worker.__init__).parameters
    options = {k: v for k, v in WORKER_OPTIONS.items() if k in accepted}
    return pq.Worker(q, concurrency=50, **options)


async def _run_one(pq, op, loc, n, ids):
    async with pq.Queue(loc) as q:
        if op in ("drain", "pg_drain"):
            w = _worker(pq, q)
            w.register("t", _noop)
            await w.run(until_empty=True)
        elif op in ("enqueue", "pg_enqueue"):
            for i in range(n):
                await q.enqueue("t", {"i": i})
        elif op == "enqueue_many":
            for start in range(0, n, MANY_BATCH):
                await q.enqueue_many(_items(min(MANY_BATCH, n - start), start))
        elif op == "claim_complete":
            for _ in range(n):
                (task,) = await q.claim("cost", limit=1)
                await q.complete(task, None)
        elif op == "get":
            for i in range(n):
                await q.get(ids[i % len(ids)])
        elif op == "stats":
            for _ in range(n):
                await q.stats()
        else:
            raise SystemExit(f"unknown op {op!r}")


def _ids_path(loc):
    return loc + ".ids.json" if "://" not in loc else None


async def _prepare(pq, plan, only=None):
    pg_ids = {}
    for k, run in enumerate(plan["runs"]):
        if only is not None and k != only:
            continue
        for op, spec in run.items():
            ids = await _prepare_one(pq, op, spec["loc"], spec["n"])
            path = _ids_path(spec["loc"])
            if path:
                with open(path, "w") as f:
                    json.dump(ids, f)
            else:
                pg_ids[spec["loc"]] = ids
    return pg_ids


def _load_ids(spec):
    path = _ids_path(spec["loc"])
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return spec.get("ids") or list(range(1, 101))


async def _run(pq, run):
    for op, spec in run.items():
        await _run_one(pq, op, spec["loc"], spec["n"], _load_ids(spec))


class OpcodeProfile:
    """Bytecodes executed and calls made per Python function: a profile that is the same on
    every run of the same code (no clock in it), so two commits' profiles can be subtracted."""

    def __init__(self, root):
        self.root = root
        self.counts = {}

    def key(self, code):
        fn = code.co_filename
        if self.root and fn.startswith(self.root):
            fn = os.path.relpath(fn, self.root)
        else:
            parts = fn.replace("\\", "/").split("/")
            fn = "/".join(parts[-2:])
        return f"{fn}:{code.co_name}"

    def tracer(self, frame, event, arg):
        if event == "call":
            frame.f_trace_opcodes = True
            c = self.counts.setdefault(self.key(frame.f_code), [0, 0])
            c[0] += 1
            return self.local

    def local(self, frame, event, arg):
        if event == "opcode":
            self.counts[self.key(frame.f_code)][1] += 1
        return self.local


def hold_off_timed_threads():
    """Keep the WAL checkpointer thread (commits from 12f511d on) from running during a count.

    It looks at the WAL every 0.1 s of wall-clock time and checkpoints past 1 MiB. Under
    cachegrind a program runs ~30x slower, so it would run ~30x as often per operation as
    in a native run, and how often - and how many pages each checkpoint copies - depends on
    the machine's load: measured, it moved a count by 0.4-2% between runs of the same code.
    Its interval is set to an hour here, so a count holds the operations' own work; the
    checkpoints' cost is the wall-clock families' business. Commits without it: no-op."""
    try:
        from prismq_queue.backends import sqlite_checkpointer
    except ImportError:
        return
    cls = getattr(sqlite_checkpointer, "Checkpointer", None)
    if cls is None or "interval" not in inspect.signature(cls.__init__).parameters:
        return
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(original).bind(self, *args, **kwargs)
        bound.arguments["interval"] = 3600.0
        original(*bound.args, **bound.kwargs)

    cls.__init__ = __init__


def leave_without_teardown():
    """End a counted run once every other thread has ended, skipping the interpreter's teardown.

    A queue's close() tells its database thread to stop and does not wait for it: whether
    that thread was still alive when the interpreter shut down decided how the teardown went
    (a full teardown of every module, or one that leaves them to the process's end and
    unwinds the thread instead), and moved a count by ~1.5 M instructions (1-1.6% of the
    claim + complete and enqueue_many figures) in some runs. The threads are waited for
    (each has been told to stop), then the process leaves at once: start-up and teardown
    are no operation's cost, and a teardown that is skipped costs the same every time."""
    import threading

    for t in threading.enumerate():
        if t is not threading.current_thread():
            t.join(timeout=60)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def forks(pq, plan):
    """Each run of the plan in a child process forked from this one, one after the other.

    Under cachegrind every process pays the interpreter's start-up and the imports
    (~380 M instructions, a minute of a loaded machine's CPU) before its first operation;
    forked children start after it. Valgrind follows a fork: each child writes its own
    count (cost.py names the files by process id, and reads the ids printed here). A
    child's count also holds the parent's work before the fork, the same in every child
    but for a few waits on the earlier children: it cancels in cost.py's differences."""
    for k, run in enumerate(plan["runs"]):
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(_run(pq, run))
            except BaseException:  # noqa: BLE001 - reported by the exit status below
                import traceback
                traceback.print_exc()
                sys.stderr.flush()
                os._exit(1)
            leave_without_teardown()
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise SystemExit(f"run {k} of the plan failed (wait status {status})")
        print(k, pid, flush=True)


def main(argv):
    import prismq_queue as pq

    hold_off_timed_threads()

    mode, plan_path = argv[1], argv[2]
    with open(plan_path) as f:
        plan = json.load(f)
    if mode == "prepare":
        pg_ids = asyncio.run(_prepare(pq, plan))
        if pg_ids:
            for run in plan["runs"]:
                for spec in run.values():
                    if spec["loc"] in pg_ids:
                        spec["ids"] = pg_ids[spec["loc"]]
            with open(plan_path, "w") as f:
                json.dump(plan, f)
    elif mode == "run":
        asyncio.run(_run(pq, plan["runs"][int(argv[3])]))
        leave_without_teardown()
    elif mode == "forks":
        forks(pq, plan)
    elif mode == "profile":
        k = int(argv[3])
        asyncio.run(_prepare(pq, plan, only=k))
        root = os.path.dirname(os.path.dirname(os.path.abspath(pq.__file__)))
        prof = OpcodeProfile(root)
        import threading
        threading.settrace(prof.tracer)  # the database thread's work counts too
        sys.settrace(prof.tracer)
        try:
            asyncio.run(_run(pq, plan["runs"][k]))
        finally:
            sys.settrace(None)
            threading.settrace(None)
        print(json.dumps({"package": pq.__file__, "counts": prof.counts}))
    elif mode == "bytecodes":
        prof = OpcodeProfile(None)
        import threading
        threading.settrace(prof.tracer)
        sys.settrace(prof.tracer)
        try:
            asyncio.run(_run(pq, plan["runs"][int(argv[3])]))
        finally:
            sys.settrace(None)
            threading.settrace(None)
        print(sum(c[1] for c in prof.counts.values()))
    elif mode == "drop":
        import asyncpg

        async def drop():
            for run in plan["runs"]:
                for spec in run.values():
                    loc = spec["loc"]
                    if "schema=" in loc:
                        schema = loc.rsplit("schema=", 1)[1].split("&")[0]
                        conn = await asyncpg.connect(loc.split("?")[0])
                        try:
                            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                        finally:
                            await conn.close()
        asyncio.run(drop())
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
