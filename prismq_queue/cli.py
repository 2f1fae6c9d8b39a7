"""The prismq-queue command line: inspect and manage a queue (a SQLite file or a PostgreSQL database)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
from datetime import datetime
from typing import Any, Optional, Sequence
from urllib.parse import quote

from . import __version__
from .backends.sqlite import SCHEMA_VERSION, SQLiteBackend
from .errors import DatabaseError, QueueError
from .queue import Queue
from .task import Task, TaskStatus


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prismq-queue",
        description="Inspect and manage a prismq_queue queue: a SQLite file or a PostgreSQL database.",
        epilog="Example: prismq-queue enqueue tasks.db resize '{\"w\": 100}' --priority 10")
    parser.add_argument("--version", action="version", version=f"prismq_queue {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("db", help="the queue: a SQLite file (or sqlite:///path) or a postgresql:// URL")
        return p

    p = command("stats", "Show task counts by status and type, the oldest due task's age, recent activity.")
    p.add_argument("--json", action="store_true", help="print the stats as JSON")
    p = command("enqueue", "Add a task.")
    p.add_argument("type", help="the task type, e.g. resize")
    p.add_argument("payload", nargs="?", default="null", help="the payload as JSON (default: null)")
    p.add_argument("--priority", type=int, default=100, help="lower runs first (default: 100)")
    p.add_argument("--delay", type=float, default=0.0, help="seconds before the task is due")
    p.add_argument("--max-attempts", type=int, default=None, help="attempts before it is dead (default: policy)")
    p.add_argument("--key", default=None, help="idempotency key")
    p = command("list", "List the newest tasks.")
    p.add_argument("--status", choices=[s.value for s in TaskStatus], help="only tasks in this state")
    p.add_argument("--type", dest="task_type", help="only tasks of this type")
    p.add_argument("--limit", type=int, default=20, help="how many (default: 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = command("purge", "Delete finished tasks older than an age.")
    p.add_argument("--older-than", type=float, required=True, metavar="SECONDS",
                   help="delete completed, failed and cancelled tasks finished more than this long ago")
    p = command("backup", "Copy a live SQLite queue to another file (online backup; for PostgreSQL use pg_dump).")
    p.add_argument("dest", help="the file to write")
    command("check", "Check the queue's integrity (SQLite's integrity check, or PostgreSQL's schema, "
                     "indexes and rows); exit 1 if it is damaged.")
    p = command("checkpoint", "Copy SQLite's write-ahead log into the database file and truncate it (SQLite only).")
    return parser


# Commands that only read or tidy an existing queue: they must not create a file
# because of a typo in its name.
NEEDS_EXISTING_FILE = {"stats", "list", "purge", "backup", "check", "checkpoint"}
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _safe(text: Any) -> str:
    """`text` fit for a terminal: control characters (escape sequences, newlines, ...) written as escapes.

    Task types and error texts come from whoever enqueued or ran the task; printed
    raw, an escape sequence in them could rewrite the terminal of whoever looks.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


def _json_line(value: Any, **options: Any) -> str:
    # json.dumps escapes every control character but DEL; escape that one too.
    return json.dumps(value, **options).replace("\x7f", "\\u007f")


def _when(ts: Optional[float]) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).isoformat(sep=" ", timespec="seconds")


def _task_dict(t: Task) -> dict[str, Any]:
    d = dict(t.__dict__)
    d["status"] = t.status.value
    return d


def _check_read_only(path: str) -> int:
    """SQLite's integrity check on a read-only connection: `check` never migrates or writes the file.

    Nor does it leave files beside it: a read-only connection to a WAL database
    creates the -wal and -shm files when they are missing, and cannot remove them.
    They are missing when no connection is open and the log was checkpointed:
    then the file alone holds every committed row, and it is read as immutable
    (no lock, no log). Should a writer come along meanwhile (the file or a log
    changes under the check), the check runs again the ordinary way.
    """
    if not os.path.exists(path + "-wal"):
        before = _file_state(path)
        version, problems = _integrity(path, "immutable=1")
        if _file_state(path) == before and not os.path.exists(path + "-wal"):
            return _report_check(version, problems)
    return _report_check(*_integrity(path, "mode=ro"))


def _file_state(path: str) -> tuple[int, int]:
    stat = os.stat(path)
    return stat.st_mtime_ns, stat.st_size


def _integrity(path: str, options: str) -> tuple[int, list[str]]:
    try:
        conn = sqlite3.connect(f"file:{_uri_path(path)}?{options}", uri=True)
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open queue {path!r}: {exc}") from None
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot check queue {path!r}: {exc}") from None
    finally:
        conn.close()
    return version, problems


def _report_check(version: int, problems: list[str]) -> int:
    print("\n".join(_safe(p) for p in problems))
    if version != SCHEMA_VERSION:
        print(f"schema version {version}; this prismq_queue writes {SCHEMA_VERSION} "
              f"(opening the file with a Queue migrates it)")
    return 0 if problems == ["ok"] else 1


def _uri_path(path: str) -> str:
    return quote(os.path.abspath(path))  # "?" or "#" in a file name must not end the path


async def _run(args: argparse.Namespace) -> int:
    q = Queue(args.db)
    backend = q.backend
    if isinstance(backend, SQLiteBackend) and args.command in NEEDS_EXISTING_FILE:
        if not os.path.exists(backend.path):
            raise DatabaseError(f"queue file {backend.path!r} does not exist")
        if args.command == "check":
            return _check_read_only(backend.path)
    if args.command == "check":  # PostgreSQL: opening the queue would create or migrate its schema
        from .backends.postgres import PostgresBackend  # (already imported: the URL named PostgreSQL)

        if not isinstance(backend, PostgresBackend):
            raise DatabaseError(f"check does not know how to read {backend.url!r} without opening it")
        problems = await backend.check_without_opening()
        print("\n".join(_safe(p) for p in problems))
        return 0 if problems == ["ok"] else 1
    async with q:
        if args.command == "stats":
            stats = await q.stats()
            if args.json:
                print(_json_line(stats, indent=2))
                return 0
            print(f"total tasks: {stats['total']}")
            for status, n in stats["by_status"].items():
                print(f"  {_safe(status):<10} {n}")
            age = stats["oldest_due_age"]
            print(f"oldest due task waits: {'-' if age is None else f'{age:.1f} s'}")
            for window, counts in stats["recent"].items():
                print(f"{window}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            for task_type, counts in sorted(stats["by_type"].items()):
                print(f"type {_safe(task_type)}: " + ", ".join(f"{_safe(k)} {v}" for k, v in sorted(counts.items())))
        elif args.command == "enqueue":
            try:
                payload = json.loads(args.payload)
            except ValueError as exc:
                print(f"error: payload is not valid JSON: {exc}", file=sys.stderr)
                return 2
            except RecursionError:
                print("error: payload nests too deeply to read", file=sys.stderr)
                return 2
            tid = await q.enqueue(args.type, payload, priority=args.priority, delay=args.delay,
                                  max_attempts=args.max_attempts, idempotency_key=args.key)
            print(tid)
        elif args.command == "list":
            for t in await q.list_tasks(args.status, args.task_type, args.limit):
                if args.json:
                    print(_json_line(_task_dict(t)))
                else:
                    print(f"{t.id:>8}  {t.status.value:<9} {_safe(t.type):<16} p={t.priority:<5} "
                          f"attempts={t.attempts}/{t.max_attempts}  due {_when(t.run_at)}"
                          + (f"  error: {_safe(t.error)}" if t.error else ""))
        elif args.command == "purge":
            print(f"purged {await q.purge(args.older_than)} finished tasks")
        elif args.command == "backup":
            await q.backup(args.dest)
            print(f"backed up to {args.dest}")
        elif args.command == "checkpoint":
            busy, log, done = await q.checkpoint()
            print(f"checkpoint: {done} of {log} pages copied" + (" (busy)" if busy else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of `prismq-queue` and `python -m prismq_queue`."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except QueueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
