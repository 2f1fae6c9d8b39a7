"""Where a benchmark's queues live, on either backend, and what this commit can measure.

The prismq_queue package (skipped where it is missing), temporary SQLite files on disk
(never ``:memory:``), and schemas of their own on a PostgreSQL server.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from typing import Any, Sequence

from ._loops import run


def pq():
    """The prismq_queue module, or NotImplementedError (asv then skips) where it is missing."""
    try:
        import prismq_queue
    except ImportError as exc:  # commits before the package existed
        raise NotImplementedError(f"prismq_queue not importable: {exc}")
    return prismq_queue


def _preimport() -> None:
    """Import prismq_queue when the suite is imported, if this commit has it.

    asv's forkserver imports the suite once per commit and forks one process per
    benchmark, parameter and round (about 300 a run): imported here, each fork starts with
    the package loaded instead of importing it again in setup (about 40 ms of CPU each,
    12 s a run, several times that in wall time on a loaded machine). It starts no
    thread. Any failure is left for pq() to report as a skip when a benchmark asks.
    """
    try:
        import prismq_queue  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken or missing package is pq()'s to report
        pass


_preimport()


def need(obj: Any, *names: str) -> None:
    """Skip (NotImplementedError) unless obj has every attribute named: features added later."""
    missing = [n for n in names if not hasattr(obj, n)]
    if missing:
        raise NotImplementedError(f"{getattr(obj, '__name__', obj)!s} lacks {', '.join(missing)}")


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
