"""Cost: machine instructions per operation, counted, not timed.

Wall clocks on a shared 2-core machine move 10-30% with the neighbours' load; the work
the code does does not. Each figure here is the number of instructions a process
executes per operation, counted by Valgrind's cachegrind
(``valgrind --tool=cachegrind --cache-sim=no``) with ``PYTHONHASHSEED=0``: the same code
gives the same count within ~0.1% whatever else the machine is doing, so a 1% rise is a
real change of the code, not noise. Lower is better.

How a figure is counted: the workloads (``_cost_child.py``) run in child processes under
cachegrind. Interpreter start-up and opening a queue cost the same in every process and
must not count, so each class runs one *baseline* process doing every operation of the
class a small pinned number of times (``SIZES[op][0]``), and per operation one more
process that does that operation a larger pinned number of times (``SIZES[op][1]``) and
the others as in the baseline; the figure is (that count - baseline count) / (size
difference). Queues are filled beforehand, outside cachegrind, so a drain counts only the
draining. k operations cost k + 1 runs (not 2k), and the runs are children forked by
one process under cachegrind after the interpreter's start-up and imports: those are
~380 M instructions (a minute of CPU under cachegrind on a loaded machine), which seven
separate processes each paid, most of the family's run time.

* ``SQLite`` - a ``Worker`` draining no-op tasks (concurrency 50), ``enqueue`` one task
  per call, ``enqueue_many`` (100 per call) per task, ``claim`` + ``complete`` through the
  API per task, ``get`` per call, ``stats()`` on a queue of 100 tasks per call.
* ``PostgreSQLClient`` - the drain and ``enqueue`` on PostgreSQL (``PRISMQ_BENCH_PG``):
  only the client process is counted; the server is another process, outside the count.
  Its queues are analyzed when filled, with autovacuum off for them
  (``_cost_child.settle_server_statistics``): the client sorts each claimed batch, and
  how much follows the server's plan, which followed whether autovacuum had analyzed the
  table yet (2.7% on the drain figure). The drain queue's server holds each trip's reply
  back 50 ms (``_cost_child.delay_replies``), so the client, ~30x slower under
  cachegrind, has always gone idle when it comes, as natively (0.1-0.2% otherwise).

A count is deterministic: one measurement per benchmark (``setup_cache`` counts the whole
class once; ``number = repeat = rounds = 1``), no repeats, no samples. The SQLite class
took 262-292 s of wall time with the machine's load average at 19-25 on 2 cores. Skipped (``NotImplementedError`` in ``setup``) when valgrind is
not installed, when the interpreter is not a real binary valgrind can run, or when the
installed prismq_queue lacks an operation. ``PRISMQ_BENCH_SMOKE=1`` (the test suite's check
that every benchmark runs) shrinks the sizes and counts Python bytecodes with the
deterministic tracer of ``_cost_child.py`` instead of cachegrind: the workloads, the plan and
the differences are the same, without cachegrind (minutes on a loaded machine);
tests/test_gate.py runs the cachegrind path end to end.
``PRISMQ_BENCH_COST_OPS=claim_complete,drain`` counts only those operations.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_cost_child.py")
SMOKE = os.environ.get("PRISMQ_BENCH_SMOKE", "") not in ("", "0")
PG_ENV = "PRISMQ_BENCH_PG"
# Count only these ops (comma-separated _cost_child ops, e.g. "claim_complete"); the
# others skip. Each op left out saves a cachegrind run (tests/test_gate.py uses it). The
# ops share their processes, so a figure counted with a subset differs from the full
# family's (claim + complete: ~1% higher alone): compare like with like.
ONLY_ENV = "PRISMQ_BENCH_COST_OPS"

# op: (baseline size, measured size). Pinned: every commit does the same work. The
# difference is sized to some 130-150 M instructions (a few seconds under cachegrind), so
# the run-to-run wobble of a count (~0.2 M) stays under 0.1% of it.
SIZES = {
    "drain": (100, 1600),  # ~90k instructions per task
    "enqueue": (20, 820),  # ~180k per call
    "enqueue_many": (200, 4200),  # ~33k per task
    "claim_complete": (20, 270),  # ~560k per task
    "get": (20, 1020),  # ~140k per call
    "stats": (10, 210),  # ~720k per call
    "pg_drain": (100, 1100),
    "pg_enqueue": (20, 520),
}
if SMOKE:
    SIZES = {op: (2, 12) for op in SIZES}

# the API each op needs from the installed prismq_queue
NEEDS = {
    "drain": ("Worker",), "pg_drain": ("Worker",),
    "enqueue": ("Queue.enqueue",), "pg_enqueue": ("Queue.enqueue",),
    "enqueue_many": ("Queue.enqueue_many",),
    "claim_complete": ("Queue.claim", "Queue.complete"),
    "get": ("Queue.get",), "stats": ("Queue.stats",),
}


class Skip(Exception):
    """Why an op cannot be counted here (becomes NotImplementedError in setup)."""


def interpreter() -> str:
    """The Python that valgrind runs: a real binary, never a shell shim (pyenv)."""
    python = sys.executable
    with open(os.path.realpath(python), "rb") as f:
        if f.read(4) != b"\x7fELF":
            raise Skip(f"{python} is not an ELF binary valgrind can run")
    return python


def check_valgrind() -> None:
    if not shutil.which("valgrind"):
        raise Skip("valgrind is not installed (apt-get install valgrind)")


def missing_api(op: str) -> str | None:
    try:
        import prismq_queue as pq
    except ImportError as exc:
        return f"prismq_queue does not import: {exc}"
    for need in NEEDS[op]:
        obj = pq
        for part in need.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                return f"this prismq_queue has no {need}"
    return None


def check_postgres() -> None:
    if not os.environ.get(PG_ENV):
        raise Skip(f"set {PG_ENV}=postgresql://user@host:port/db to count the PostgreSQL client")
    if importlib.util.find_spec("asyncpg") is None:
        raise Skip("asyncpg is not installed")
    try:
        found = importlib.util.find_spec("prismq_queue.backends.postgres") is not None
    except ImportError:
        found = False
    if not found:
        raise Skip("this commit of prismq_queue has no PostgreSQL backend")


def child(mode: str, plan_path: str, *extra: str) -> int:
    """Run _cost_child.py (not under valgrind); the number it printed in mode "bytecodes"."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [interpreter(), CHILD, mode, plan_path, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[-3:])} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return int(r.stdout.split()[-1]) if mode == "bytecodes" else 0


def counted_runs(plan_path: str, where: str, runs: int) -> list[int]:
    """The instructions of each run of the plan: one valgrind process, whose start-up the
    runs share, forks a child per run (_cost_child.py forks); each child's count is read
    from its own cachegrind file."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    out = os.path.join(where, "cachegrind.%p")
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
           interpreter(), CHILD, "forks", plan_path]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"{CHILD} forks exited {r.returncode}:\n{r.stderr[-3000:]}")
    pids = dict(line.split() for line in r.stdout.splitlines() if re.fullmatch(r"\d+ \d+", line.strip()))
    totals = []
    for k in range(runs):
        with open(os.path.join(where, f"cachegrind.{pids[str(k)]}")) as f:
            m = re.search(r"^summary:\s+(\d+)", f.read(), re.M)
        if not m:
            raise RuntimeError(f"no instruction count in run {k}'s cachegrind file")
        totals.append(int(m.group(1)))
    return totals


def make_plan(ops: list[str], where: str, location) -> dict:
    """Run 0 is the baseline (every op at its small size); run i+1 is op i at its large size."""
    runs = []
    for k in range(len(ops) + 1):
        run = {}
        for i, op in enumerate(ops):
            small, large = SIZES[op]
            run[op] = {"loc": location(f"r{k}_{op}"), "n": large if k == i + 1 else small}
        runs.append(run)
    return {"runs": runs}


def count(ops: list[str], location, where: str) -> dict:
    """{op: instructions per operation} for ops, counted as described in the module doc."""
    plan = make_plan(ops, where, location)
    plan_path = os.path.join(where, "plan.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    child("prepare", plan_path)
    try:
        if SMOKE:
            totals = [child("bytecodes", plan_path, str(k)) for k in range(len(plan["runs"]))]
        else:
            totals = counted_runs(plan_path, where, len(plan["runs"]))
    finally:
        if any("://" in spec["loc"] for run in plan["runs"] for spec in run.values()):
            try:
                child("drop", plan_path)
            except Exception:  # noqa: BLE001 - a server gone away must not hide the counts
                pass
    out = {}
    for i, op in enumerate(ops):
        small, large = SIZES[op]
        out[op] = (totals[i + 1] - totals[0]) / (large - small)
    return out


def measure(ops: list[str], backend: str) -> dict:
    """{op: figure or "skip: reason"}, for setup_cache."""
    result = {}
    try:
        if not SMOKE:
            check_valgrind()
            interpreter()
        if backend == "postgresql":
            check_postgres()
    except Skip as exc:
        return {op: f"skip: {exc}" for op in ops}
    todo = []
    only = [o.strip() for o in os.environ.get(ONLY_ENV, "").split(",") if o.strip()]
    for op in ops:
        why = f"not selected ({ONLY_ENV}={','.join(only)})" if only and op not in only else missing_api(op)
        if why:
            result[op] = f"skip: {why}"
        else:
            todo.append(op)
    if not todo:
        return result
    where = tempfile.mkdtemp(prefix="prismq-cost-")
    try:
        if backend == "sqlite":
            location = lambda name: os.path.join(where, f"{name}.db")  # noqa: E731
        else:
            url = os.environ[PG_ENV]
            # the schema names are in every statement's text: one length for every pid
            tag = f"cost_{os.getpid():07d}"
            location = lambda name: url + ("&" if "?" in url else "?") + f"schema={tag}_{name}"  # noqa: E731
        result.update(count(todo, location, where))
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return result


class _Cost:
    unit = "instructions"
    # one deterministic count per commit: nothing to repeat or average
    number = 1
    repeat = 1
    rounds = 1
    warmup_time = 0
    timeout = 1800  # setup_cache counts the whole class: ~1 min of CPU, far longer on a loaded machine
    FIGURES: dict[str, str] = {}  # param value -> op of _cost_child.py
    BACKEND = "sqlite"
    # cost-2: the Worker's heartbeat is held off during a count (_cost_child.WORKER_OPTIONS)
    version = "cost-2"

    def setup(self, cache, figure):
        # a figure that could not be counted here is skipped (n/a), never a number
        v = cache.get(self.FIGURES[figure])
        if v is None or isinstance(v, str):
            raise NotImplementedError(v[len("skip: "):] if isinstance(v, str) else f"{figure}: not counted")

    def track_instructions(self, cache, figure):
        return cache[self.FIGURES[figure]]


class SQLite(_Cost):
    """Instructions per operation of prismq_queue on a SQLite file (the whole process).

    drain: a Worker (concurrency 50) draining no-op tasks; enqueue: one task per call;
    enqueue_many: 100 tasks per call, per task; claim_complete: claim(limit=1) then
    complete; get: a task by id; stats: stats() on a queue of 100 tasks.
    """

    FIGURES = {
        "drain_per_task": "drain",
        "enqueue_per_call": "enqueue",
        "enqueue_many_per_task": "enqueue_many",
        "claim_complete_per_task": "claim_complete",
        "get_per_call": "get",
        "stats_per_call": "stats",
    }
    params = [list(FIGURES)]
    param_names = ["figure"]
    BACKEND = "sqlite"

    # asv keys a setup_cache by where its code is: each class needs its own
    def setup_cache(self):
        return measure(list(self.FIGURES.values()), self.BACKEND)


class PostgreSQLClient(_Cost):
    """Instructions of the client process per operation on PostgreSQL (the server is another
    process and is not counted): a Worker draining no-op tasks, and enqueue one per call."""

    FIGURES = {
        "client_drain_per_task": "pg_drain",
        "client_enqueue_per_call": "pg_enqueue",
    }
    # the backend param, as in the other families, so a skip without a server reads as one
    params = [["postgresql"], list(FIGURES)]
    param_names = ["backend", "figure"]
    BACKEND = "postgresql"
    # cost-3: the queues are analyzed once filled and kept from autovacuum, and the drain's
    # replies come after the client waits (_cost_child.settle_server_statistics,
    # delay_replies); the SQLite class is unchanged (cost-2)
    version = "cost-3"

    def setup_cache(self):
        return measure(list(self.FIGURES.values()), self.BACKEND)

    def setup(self, cache, backend, figure):
        super().setup(cache, figure)

    def track_instructions(self, cache, backend, figure):
        return super().track_instructions(cache, figure)
