"""Child-process side of the multi-process benchmarks (run as a script, never imported by them).

    python _child.py MODE ARGS...

Each child opens its own Queue (own connection), prints {"ready": true} and then
answers JSON commands read from stdin, one per line, with one JSON line on stdout.
All times are time.monotonic(), which is one system-wide clock on Linux, so the
parent can compare them with its own.

Modes:
  claimloop PATH WORKER_ID LIMIT   concurrency family: from a shared start time, claim/complete
                                   until the queue is empty, counting what reaches the caller
  producer PATH                    latency family: enqueue paced tasks stamped with t0
  idle PATH INTERVALS              an idle Worker; reports the CPU time it used over
                                   INTERVALS whole poll intervals
  stress PATH WORKER_ID LOG FAIL_P SEED LEASE
                                   stress family: claim, fail at random (retried) or
                                   complete; each accepted completion is appended to LOG
  stressproducer PATH N SEED CANCEL_P
                                   stress family: enqueue N tasks, cancel some at random
  fill PATH N TYPE                 enqueue N tasks, answer ready, exit
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import random
import sys
import time

try:  # run as a script: benchmarks/ is this script's directory, first on sys.path
    from _workload import produce
except ImportError:  # imported as benchmarks._child (asv imports every module to discover benchmarks)
    from ._workload import produce


def _out(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def _lines():
    for line in sys.stdin:
        line = line.strip()
        if line:
            yield json.loads(line)


def _is_locked(exc: BaseException) -> bool:
    text = f"{type(exc).__name__}: {exc}".lower()
    return "locked" in text or "busy" in text


def _queue(pq, path: str, fast_retry: bool = False):
    kwargs = {"durability": "normal"}
    if fast_retry and "retry" in inspect.signature(pq.Queue).parameters:
        kwargs["retry"] = pq.RetryPolicy(max_attempts=6, base_delay=0.005, factor=2.0, max_delay=0.05,
                                         jitter=0.1)
    return pq.Queue(path, **kwargs)


# ---------------------------------------------------------------- concurrency
async def claimloop(path: str, wid: str, limit: int) -> None:
    """Commands: {"cmd": "open", "path"} switches to another queue file (answers ready);
    {"cmd": "go", "at"} waits until the shared start time `at`, then claims and completes
    until the queue is empty, and answers what it saw."""
    import prismq_queue as pq

    refused_types = tuple(getattr(pq, n) for n in ("LeaseLost", "TaskCancelled") if hasattr(pq, n))
    q = _queue(pq, path)
    await q.open()
    loop = asyncio.get_running_loop()
    _out({"ready": True})
    reader = _lines()
    while True:
        msg = await loop.run_in_executor(None, next, reader, {"cmd": "quit"})
        if msg["cmd"] == "quit":
            break
        if msg["cmd"] == "open":
            await q.close()
            q = _queue(pq, msg["path"])
            await q.open()
            await q.stats()  # the first statement prepares the connection, outside the timing
            _out({"ready": True})
            continue
        claimed: list[int] = []  # every id a claim handed to this process
        ids: list[int] = []  # the ids this process completed
        locked = empty = conflicts = claims = refused = 0
        t_last = None
        delay = msg.get("at", 0) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # every process starts at the one shared moment
        while True:
            try:
                tasks = await q.claim(wid, limit=limit)
            except Exception as exc:  # noqa: BLE001 - everything that reaches the caller is counted
                if _is_locked(exc):
                    locked += 1
                    continue
                raise
            claims += 1
            if not tasks:
                empty += 1
                st = await q.stats()
                queued = st.get("by_status", {}).get("queued", 0)
                if queued and conflicts < 100_000:  # (bounded: never spin forever)
                    conflicts += 1  # nothing handed out while ready work existed
                    continue
                break
            for t in tasks:
                claimed.append(t.id)
                while True:
                    try:
                        await q.complete(t, None)
                        ids.append(t.id)
                        break
                    except refused_types:
                        refused += 1  # the lease went to another claim: counted, not fatal
                        break
                    except Exception as exc:  # noqa: BLE001
                        if _is_locked(exc):
                            locked += 1
                            continue
                        raise
            t_last = time.monotonic()
        _out({"ids": ids, "claimed": claimed, "locked": locked, "empty": empty, "conflicts": conflicts,
              "claims": claims, "refused": refused, "t_last": t_last})
    await q.close()


# ---------------------------------------------------------------- latency
async def producer(path: str) -> None:
    import prismq_queue as pq

    q = _queue(pq, path)
    await q.open()
    loop = asyncio.get_running_loop()
    await q.enqueue("warmup", {"t0": time.monotonic()})  # prepares statements; parent ignores it
    _out({"ready": True})
    reader = _lines()
    while True:
        msg = await loop.run_in_executor(None, next, reader, {"cmd": "quit"})
        if msg["cmd"] == "quit":
            break
        await produce(q, msg["n"], msg["interval"], msg.get("batch", 1), msg.get("type", "lat"))
        _out({"done": True})
    await q.close()


async def idle(path: str, intervals: int) -> None:
    import prismq_queue as pq

    q = _queue(pq, path)
    await q.open()
    w = pq.Worker(q, concurrency=50)
    w.register("noop", lambda task: None)
    _out({"ready": True})
    task = asyncio.ensure_future(w.run())
    # An idle Worker wakes once per poll interval: measure over whole intervals, so
    # that every wake-up in the window counts (a shorter window can miss it).
    poll = float(getattr(w, "poll_interval", 1.0))
    await asyncio.sleep(poll + 0.25)  # settle into the idle state
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(poll * intervals)
    c1, t1 = time.process_time(), time.monotonic()
    w.stop()
    await task
    await q.close()
    _out({"cpu": c1 - c0, "wall": t1 - t0, "poll_interval": poll})
    for _ in _lines():
        break


# ---------------------------------------------------------------- stress
async def stress(path: str, wid: str, log: str, fail_p: float, seed: int, lease: float) -> None:
    import prismq_queue as pq

    rng = random.Random(seed)
    q = _queue(pq, path, fast_retry=True)
    await q.open()
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _out({"ready": True})
    loop = asyncio.get_running_loop()
    reader = _lines()
    msg = await loop.run_in_executor(None, next, reader, {"cmd": "quit"})
    if msg["cmd"] == "quit":
        return
    locked = refused = 0
    idle_since = None
    drain = loop.run_in_executor(None, next, reader, {"cmd": "drain"})  # producers are done
    while True:
        try:
            tasks = await q.claim(wid, limit=8, lease_seconds=lease)
        except Exception as exc:  # noqa: BLE001
            if _is_locked(exc):
                locked += 1
                continue
            raise
        if not tasks:
            st = (await q.stats()).get("by_status", {})
            if drain.done() and not st.get("queued", 0) and not st.get("running", 0):
                if idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > 0.3:
                    break
            else:
                idle_since = None
            await asyncio.sleep(0.005)
            continue
        idle_since = None
        done = []
        for t in tasks:
            await asyncio.sleep(0)  # a handler with an await in it
            try:
                if rng.random() < fail_p:
                    await q.fail(t, "random failure", retry=True)
                else:
                    await q.complete(t, {"w": wid})
                    done.append(t.id)
            except Exception as exc:  # noqa: BLE001
                if _is_locked(exc):
                    locked += 1
                elif isinstance(exc, getattr(pq, "QueueError", ())):
                    refused += 1  # fenced: lease lost or cancelled; the queue said no
                else:
                    raise
        if done:
            os.write(fd, ("".join(f"{i}\n" for i in done)).encode())
    os.close(fd)
    await q.close()
    _out({"locked": locked, "refused": refused})


async def stressproducer(path: str, n: int, seed: int, cancel_p: float) -> None:
    import prismq_queue as pq

    rng = random.Random(seed)
    q = _queue(pq, path, fast_retry=True)
    await q.open()
    _out({"ready": True})
    loop = asyncio.get_running_loop()
    reader = _lines()
    msg = await loop.run_in_executor(None, next, reader, {"cmd": "quit"})
    if msg["cmd"] == "quit":
        return
    ids: list[int] = []
    cancelled: list[int] = []
    locked = 0
    for start in range(0, n, 50):
        items = [("work", {"i": i, "s": seed}) for i in range(start, min(n, start + 50))]
        while True:
            try:
                ids.extend(await q.enqueue_many(items))
                break
            except Exception as exc:  # noqa: BLE001
                if _is_locked(exc):
                    locked += 1
                    continue
                raise
        for tid in ids[-len(items):]:
            if rng.random() < cancel_p:
                try:
                    if await q.cancel(tid):
                        cancelled.append(tid)
                except Exception as exc:  # noqa: BLE001
                    if not _is_locked(exc):
                        raise
                    locked += 1
        await asyncio.sleep(0.002)
    await q.close()
    _out({"ids": ids, "cancelled": cancelled, "locked": locked})


async def fill(path: str, n: int, type_: str) -> None:
    """Create the file and enqueue n distinct tasks, so the parent's memory stays untouched."""
    import prismq_queue as pq

    async with _queue(pq, path) as q:
        for start in range(0, n, 5000):
            await q.enqueue_many([(type_, {"n": i, "k": (i * 2654435761) % (1 << 30)})
                                  for i in range(start, min(n, start + 5000))])
    _out({"ready": True})
    for _ in _lines():
        break


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "fill":
        coro = fill(args[0], int(args[1]), args[2])
    elif mode == "claimloop":
        coro = claimloop(args[0], args[1], int(args[2]))
    elif mode == "producer":
        coro = producer(args[0])
    elif mode == "idle":
        coro = idle(args[0], int(args[1]))
    elif mode == "stress":
        coro = stress(args[0], args[1], args[2], float(args[3]), int(args[4]), float(args[5]))
    elif mode == "stressproducer":
        coro = stressproducer(args[0], int(args[1]), int(args[2]), float(args[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    asyncio.run(coro)


if __name__ == "__main__":
    main(sys.argv[1:])
