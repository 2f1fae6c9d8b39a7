"""Shared helpers of the benchmark suite; cheap to import (no prismq_queue import here).

Everything a benchmark module needs lives here, so that the modules themselves read as
"what is measured": temporary database files on disk (never ``:memory:``), seeded
workload generators, an event loop made in ``setup`` (asv has no asyncio support),
child processes that run workers or producers, and a few statistics.

``PRISMQ_BENCH_SMOKE=1`` shrinks every size (the test suite runs each benchmark
once that way); results taken with it are not meant to be compared with anything.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, Sequence

from ._sizes import SMOKE, size  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_child.py")


REPEATS = 1 if SMOKE else 3  # medians are taken over this many measured repeats


# ---------------------------------------------------------------- prismq_queue access
def pq():
    """The prismq_queue module, or NotImplementedError (asv then skips) where it is missing."""
    try:
        import prismq_queue
    except ImportError as exc:  # commits before the package existed
        raise NotImplementedError(f"prismq_queue not importable: {exc}")
    return prismq_queue


def need(obj: Any, *names: str) -> None:
    """Skip (NotImplementedError) unless obj has every attribute named: features added later."""
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise NotImplementedError(f"{getattr(obj, '__name__', obj)!s} lacks {', '.join(missing)}")


# ---------------------------------------------------------------- files and loops
class TempDir:
    """A temporary directory on disk (the default temp dir; never :memory:)."""

    def __init__(self, prefix: str = "prismq-bench-"):
        self.path = tempfile.mkdtemp(prefix=prefix)

    def file(self, name: str = "q.db") -> str:
        return os.path.join(self.path, name)

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suffix)
        except FileNotFoundError:
            pass


def new_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop


def close_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    if loop is None or loop.is_closed():
        return
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def run(coro_or_fn, *args) -> Any:
    """Run a coroutine (or a coroutine function with args) on a fresh loop, then close it."""
    loop = new_loop()
    try:
        coro = coro_or_fn(*args) if callable(coro_or_fn) else coro_or_fn
        return loop.run_until_complete(coro)
    finally:
        close_loop(loop)


# ---------------------------------------------------------------- workloads
def payloads(n: int, seed: int = 1, start: int = 0) -> list[dict]:
    """n distinct small JSON payloads, the same for a given seed on every commit."""
    rng = random.Random(seed)
    return [{"n": start + i, "k": rng.randrange(1 << 30)} for i in range(n)]


def noop_items(n: int, seed: int = 1, type_: str = "noop", start: int = 0) -> list[tuple]:
    return [(type_, p) for p in payloads(n, seed, start)]


def chunks(seq: Sequence, n: int) -> Iterable[Sequence]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


async def fill(q, n: int, type_: str = "noop", seed: int = 1, batch: int = 5000, start: int = 0,
               **options: Any) -> list[int]:
    """Enqueue n distinct tasks through enqueue_many in batches (fast prefill)."""
    ids: list[int] = []
    items = noop_items(n, seed, type_, start)
    for part in chunks(items, batch):
        ids.extend(await q.enqueue_many(list(part), **options))
    return ids


# ---------------------------------------------------------------- statistics
def median(xs: Iterable[float]) -> float:
    xs = list(xs)
    return statistics.median(xs) if xs else math.nan


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def jain(xs: Sequence[float]) -> float:
    """Jain's fairness index: 1.0 when all shares are equal, 1/n when one takes all."""
    xs = list(xs)
    if not xs:
        return math.nan
    sq = sum(x * x for x in xs)
    return (sum(xs) ** 2) / (len(xs) * sq) if sq else 1.0


def repeat_median(fn: Callable[[], float], repeats: int | None = None, warmup: bool = True) -> float:
    """Median of `repeats` calls of fn() (after one unmeasured warm-up call when asked)."""
    if warmup:
        fn()
    return median(fn() for _ in range(repeats or REPEATS))


# ---------------------------------------------------------------- child processes
def child_env() -> dict:
    """Environment for child processes: the same prismq_queue the parent imports."""
    env = dict(os.environ)
    paths = [HERE]
    try:
        import prismq_queue  # noqa: F401

        paths.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(prismq_queue.__file__))))
    except ImportError:
        pass
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    return env


class Child:
    """A child process running benchmarks/_child.py MODE ARGS, talking JSON lines on stdin/stdout."""

    TIMEOUT = 120.0  # no answer for this long: the child is stuck; fail instead of hanging

    def __init__(self, mode: str, *args: Any):
        import queue
        import threading

        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, mode, *[str(a) for a in args]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env=child_env(), text=True, bufsize=1,
        )
        self._lines: "queue.Queue[str]" = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self._lines.put(line)
            self._lines.put("")  # end of output

        threading.Thread(target=pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float | None = None) -> dict:
        import queue

        try:
            line = self._lines.get(timeout=timeout or self.TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError(f"benchmark child ({self.mode}) gave no answer in {timeout or self.TIMEOUT:.0f} s")
        if not line:
            rc = self.proc.wait(timeout=10)
            raise RuntimeError(f"benchmark child ({self.mode}) exited (rc={rc}) without answering")
        return json.loads(line)

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def start_children(mode: str, argsets: Sequence[Sequence[Any]]) -> list[Child]:
    """Start one child per argument set and wait until each says it is ready."""
    kids = [Child(mode, *a) for a in argsets]
    try:
        for k in kids:
            msg = k.recv()
            if not msg.get("ready"):
                raise RuntimeError(f"child not ready: {msg}")
    except BaseException:
        for k in kids:
            k.proc.kill()
            k.close()
        raise
    return kids


def now() -> float:
    """The clock every process of a benchmark shares (CLOCK_MONOTONIC is system-wide on Linux)."""
    return time.monotonic()


# ---------------------------------------------------------------- run-scoped sharing (benchmarks/_memo.py)
from ._memo import repeats, shared  # noqa: E402,F401
from ._memo import clear as clear_memo  # noqa: E402,F401


# ---------------------------------------------------------------- backends
BACKENDS = ["sqlite", "postgresql"]
# Where each PostgreSQL backend's server is. make bench starts both: PRISMQ_BENCH_PG with
# fsync and full_page_writes off (most PostgreSQL figures), PRISMQ_BENCH_PG_DURABLE with
# PostgreSQL's default durability (backend "postgresql_durable": what a deployment gets).
PG_ENV = "PRISMQ_BENCH_PG"
SERVER_ENV = {"postgresql": PG_ENV, "postgresql_durable": "PRISMQ_BENCH_PG_DURABLE"}


def need_backend(backend: str) -> None:
    """Skip (NotImplementedError) unless `backend` can be measured here, on this commit."""
    if backend == "sqlite":
        return
    import importlib.util

    var = SERVER_ENV[backend]
    if not os.environ.get(var):
        raise NotImplementedError(f"set {var}=postgresql://user@host:port/db to run the {backend} benchmarks")
    if importlib.util.find_spec("asyncpg") is None:
        raise NotImplementedError("asyncpg is not installed")
    pq()
    try:
        found = importlib.util.find_spec("prismq_queue.backends.postgres") is not None
    except ImportError:
        found = False
    if not found:
        raise NotImplementedError("this commit of prismq_queue has no PostgreSQL backend")


class Store:
    """Where a benchmark's queues live: files in a temp dir, or fresh schemas on the server.

    location() hands out a new queue location each call (a file path for SQLite, the
    PRISMQ_BENCH_PG URL with a schema of its own for PostgreSQL); reset() empties one;
    cleanup() removes everything this Store made.
    """

    def __init__(self, backend: str, tag: str = "b"):
        need_backend(backend)
        self.backend = backend
        self.tag = "".join(c for c in tag if c.isalnum())[:12] or "b"
        self.tmp = TempDir()
        self.url = os.environ.get(SERVER_ENV.get(backend, ""), "")
        self.schemas: list[str] = []

    def location(self, name: str = "q") -> str:
        if self.backend == "sqlite":
            return self.tmp.file(f"{name}.db")
        schema = f"bench_{self.tag}_{os.getpid()}_{len(self.schemas)}"
        self.schemas.append(schema)
        return self.url + ("&" if "?" in self.url else "?") + "schema=" + schema

    def _drop(self, schemas: Sequence[str]) -> None:
        import asyncpg

        async def go():
            conn = await asyncpg.connect(self.url.split("?")[0])
            try:
                for s in schemas:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{s}" CASCADE')
            finally:
                await conn.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            run(go)
            return
        # called from a coroutine (outside any timed region): use a loop of its own
        import threading

        errors: list[BaseException] = []

        def target():
            try:
                run(go)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        t = threading.Thread(target=target)
        t.start()
        t.join()
        if errors:
            raise errors[0]

    def reset(self, location: str) -> None:
        if self.backend == "sqlite":
            remove_db(location)
        else:
            self._drop([location.rsplit("schema=", 1)[1].split("&")[0]])

    def cleanup(self) -> None:
        if self.backend != "sqlite" and self.schemas:
            try:
                self._drop(self.schemas)
            except Exception:  # noqa: BLE001 - a server gone away must not hide the result
                pass
        self.tmp.cleanup()
