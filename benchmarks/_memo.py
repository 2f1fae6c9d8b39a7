"""One costly measurement, shared by every benchmark that reads a figure of it.

Several track_ benchmarks read different figures of one measurement (tasks/s, fairness
and duplicates of one multi-process run). asv runs each benchmark in a process of its
own, so the first one to ask measures and stores the result as JSON in a directory
private to the run, commit and environment; the others read it. An error, a skip and a
measurement killed at its timeout are remembered too: every later reader raises at once
instead of measuring again.

Which run is which, and whether it is a quick one, comes from environment variables,
because asv tells a benchmark neither (asv's own ``setup_cache`` is per class and does
not know ``--quick``):

* ``PRISMQ_BENCH_RUN``: an id for one benchmarking run; ``make bench``
  (tools/bench.py) sets a fresh one. Unset, the run is the asv process that started
  this benchmark process (its pid and start time), with asv's ``ASV_COMMIT`` and
  ``ASV_ENV_NAME``.
* ``PRISMQ_BENCH_QUICK=1``: one measured repeat instead of 3; ``make bench QUICK=1``
  sets it beside asv's ``--quick``. Set it yourself with a hand-made ``asv run --quick``.

Outside asv (no ``ASV_ENV_NAME``, which asv sets for every benchmark process) and
without ``PRISMQ_BENCH_RUN``, results are kept in this process only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from typing import Any, Callable

from ._sizes import SMOKE

REPEATS = 3  # measured repeats of one shared measurement (1 when quick or smoke)
_LOCAL: dict = {}
_LOCAL_SAMPLES: dict = {}


def quick() -> bool:
    return os.environ.get("PRISMQ_BENCH_QUICK", "") not in ("", "0")


def repeats() -> int:
    return 1 if (SMOKE or quick()) else REPEATS


def _in_asv() -> bool:
    return "ASV_ENV_NAME" in os.environ or "PRISMQ_BENCH_RUN" in os.environ


def _run_id() -> str:
    if os.environ.get("PRISMQ_BENCH_RUN"):
        return os.environ["PRISMQ_BENCH_RUN"]
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/stat") as fh:
            started = fh.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        started = "0"
    return f"{ppid}-{started}"


def memo_dir() -> str:
    """The directory of this run, commit and environment (made on first use)."""
    tag = "-".join([_run_id(), os.environ.get("ASV_COMMIT", "wt")[:12],
                    os.environ.get("ASV_ENV_NAME", "env").replace(os.sep, "_")[-60:],
                    "q" if quick() else "f"])
    root = os.path.join(tempfile.gettempdir(), "prismq-bench-memo")
    d = os.path.join(root, "".join(c if c.isalnum() or c in "-_." else "_" for c in tag))
    if not os.path.isdir(d):
        os.makedirs(d, exist_ok=True)
        try:  # forget the memos of runs older than a day
            for old in os.listdir(root):
                full = os.path.join(root, old)
                if time.time() - os.path.getmtime(full) > 86400:
                    shutil.rmtree(full, ignore_errors=True)
        except OSError:
            pass
    return d


def _compute(fn: Callable[[], Any]) -> list:
    try:
        return ["ok", fn()]
    except NotImplementedError as exc:
        return ["skip", str(exc)]
    except Exception:  # noqa: BLE001 - stored, and raised again for every reader
        return ["error", traceback.format_exc()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write(path: str, record: list) -> None:
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(record, fh)
    os.replace(tmp, path)


def _stored(d: str, key: str, fn: Callable[[], Any]) -> list:
    path = os.path.join(d, key + ".json")
    started = os.path.join(d, key + ".started")
    while True:
        if os.path.exists(path):
            with open(path) as fh:
                return json.load(fh)
        try:
            with open(started) as fh:
                pid = int(fh.read() or 0)
        except (OSError, ValueError):
            pid = None
        if pid is None:
            break
        if not _alive(pid):  # killed (asv's timeout) before it stored anything: remember that
            record = ["error", f"an earlier benchmark of this run was killed while measuring {key} "
                               f"(pid {pid}, most likely asv's timeout); not measured again"]
            _write(path, record)
            return record
        time.sleep(0.5)  # measured right now by another benchmark process (asv -j): wait for it
    with open(started, "w") as fh:
        fh.write(str(os.getpid()))
    record = _compute(fn)
    _write(path, record)
    return record


def shared(key: str, fn: Callable[[], Any]) -> Any:
    """fn() computed once per run (and commit, environment), shared by every benchmark that asks."""
    if _in_asv():
        kind, value = _stored(memo_dir(), key, fn)
    else:
        if key not in _LOCAL:
            _LOCAL[key] = _compute(fn)
        kind, value = _LOCAL[key]
    if kind == "skip":
        raise NotImplementedError(value)
    if kind == "error":
        raise RuntimeError(f"shared measurement {key} failed:\n{value}")
    return value


def record(key: str, value: float) -> None:
    """Keep one sample of a figure that a benchmark measures as a side effect of its own work.

    A time_ benchmark's sample can hold a second figure of the same work (the CPU time
    of the drain it times): recorded here, another benchmark of the run reads every
    sample with recorded() instead of doing the work again. One line per sample, appended
    in one write (a line this short is written whole).
    """
    if _in_asv():
        with open(os.path.join(memo_dir(), key + ".samples"), "a") as fh:
            fh.write(json.dumps(value) + "\n")
    else:
        _LOCAL_SAMPLES.setdefault(key, []).append(value)


def recorded(key: str) -> list:
    """Every sample record() kept under key in this run (and commit, environment), oldest first."""
    if not _in_asv():
        return list(_LOCAL_SAMPLES.get(key, []))
    try:
        with open(os.path.join(memo_dir(), key + ".samples")) as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError:
        return []


def clear() -> None:
    _LOCAL.clear()
    _LOCAL_SAMPLES.clear()
