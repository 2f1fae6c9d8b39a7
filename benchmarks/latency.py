"""Latency: from ``enqueue`` to the handler starting, and to the task's completion.

A ``Worker`` (concurrency 50) runs in the benchmark process. Tasks carry the time they
were enqueued; the handler notes when it starts, and the completion time is the
``finished_at`` the queue stamps on the task (read back afterwards with ``get``).
Four scenarios, each the median over 3 repeats of the percentile within a repeat:

* producer in the same process or in another process (the worker then has to notice
  another connection's commit: the cross-process wake-up path);
* light load: one task in flight at a time (same process: enqueue, wait for it, pause
  0.5 ms; other process: one task every 2 ms), 800 tasks per repeat, or steady load: batches every 2 ms at half
  of the capacity measured in the same run (a Worker draining queued no-op tasks).

Also: the CPU an idle Worker burns while it waits for work (target < 3 % of a core),
the median of three 0.5 s windows after it settled.
Both also run on PostgreSQL (param ``backend``) when ``PRISMQ_BENCH_PG`` names a server.
"""

from __future__ import annotations

import asyncio
import time

from . import _helpers as h

LIGHT_N = h.size(800, 20)
STEADY_SECONDS = 0.6 if not h.SMOKE else 0.1
STEADY_FRACTION = 0.5
INTERVAL = 0.002
IDLE_SECONDS = 1.5 if not h.SMOKE else 0.3
SCENARIOS = ["same-light", "same-steady", "other-light", "other-steady"]


async def _produce(q, n: int, interval: float, batch: int) -> None:
    nxt = time.monotonic()
    sent = 0
    while sent < n:
        delay = nxt - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        k = min(batch, n - sent)
        t0 = time.monotonic()
        if k == 1:
            await q.enqueue("lat", {"t0": t0, "i": sent})
        else:
            await q.enqueue_many([("lat", {"t0": t0, "i": sent + j}) for j in range(k)])
        sent += k
        nxt += interval


async def _capacity(path: str) -> float:
    pq = h.pq()
    n = h.size(5_000, 100)
    async with pq.Queue(path, durability="normal") as q:
        await h.fill(q, n, type_="cap")
        w = pq.Worker(q, concurrency=50)
        w.register("cap", lambda task: None)
        t0 = time.perf_counter()
        await w.run(until_empty=True)
        return n / (time.perf_counter() - t0)


async def _scenario(path: str, where: str, load: str, rate: float, rounds: int) -> dict:
    """Run `rounds` repeats (the first one a short warm-up, dropped) of one scenario."""
    pq = h.pq()
    async with pq.Queue(path, durability="normal") as q:
        starts: dict[int, float] = {}
        t0s: dict[int, float] = {}
        walls: dict[int, float] = {}
        arrived = asyncio.Event()

        async def handler(task):
            now = time.monotonic()
            starts[task.id] = now
            t0s[task.id] = task.payload["t0"]
            walls[task.id] = time.time() - (now - task.payload["t0"])  # wall clock at enqueue
            arrived.set()

        w = pq.Worker(q, concurrency=50, lease_seconds=60)
        w.register("lat", handler)
        w.register("warmup", lambda task: None)
        runner = asyncio.ensure_future(w.run())
        kid = h.start_children("producer", [(path,)])[0] if where == "other" else None
        results = []
        try:
            for r in range(rounds):
                starts.clear(), t0s.clear(), walls.clear()
                if load == "light":
                    n = LIGHT_N if r else max(5, LIGHT_N // 10)
                    batch = 1
                else:
                    batch = max(1, round(rate * STEADY_FRACTION * INTERVAL))
                    n = batch * max(5, round(STEADY_SECONDS / INTERVAL)) if r else batch * 20
                if where == "same" and load == "light":
                    for i in range(n):
                        arrived.clear()
                        await q.enqueue("lat", {"t0": time.monotonic(), "i": i})
                        await asyncio.wait_for(arrived.wait(), 10)
                        await asyncio.sleep(0.0005)
                elif where == "same":
                    await _produce(q, n, INTERVAL, batch)
                else:
                    kid.send({"cmd": "produce", "n": n, "interval": INTERVAL, "batch": batch})
                    await asyncio.get_running_loop().run_in_executor(None, kid.recv)
                deadline = time.monotonic() + 30
                while len(starts) < n and time.monotonic() < deadline:
                    await asyncio.sleep(0.002)
                if len(starts) < n:
                    raise RuntimeError(f"only {len(starts)} of {n} tasks started")
                await asyncio.sleep(0.05)  # let the worker acknowledge the last batch
                start_ms = [(starts[i] - t0s[i]) * 1000 for i in starts]
                done_ms = []
                for i in list(starts):
                    t = await q.get(i)
                    fin = getattr(t, "finished_at", None)
                    if fin is not None:
                        done_ms.append((fin - walls[i]) * 1000)
                if r:
                    res = {}
                    for p in (50, 95, 99):
                        res[f"start_p{p}"] = h.percentile(start_ms, p)
                        res[f"done_p{p}"] = h.percentile(done_ms, p) if len(done_ms) == n else None
                    results.append(res)
        finally:
            if kid is not None:
                kid.close()
            w.stop()
            await runner
    out = {}
    for k in results[0]:
        vals = [x[k] for x in results]
        out[k] = None if any(v is None for v in vals) else h.median(vals)
    return out


def measure_all(backend: str = "sqlite") -> dict:
    store = h.Store(backend, "lat")
    try:
        rate = h.run(_capacity, store.location("cap"))
        out = {"capacity": rate}
        for sc in SCENARIOS:
            where, load = sc.split("-")
            out[sc] = h.run(_scenario, store.location(sc.replace("-", "_")), where, load, rate, h.repeats() + 1)
        return out
    finally:
        store.cleanup()


class EnqueueToHandler:
    """Latency percentiles (ms) from enqueue to handler start and to completion."""

    params = [h.BACKENDS, SCENARIOS, ["p50", "p95", "p99"]]
    param_names = ["backend", "scenario", "percentile"]
    unit = "ms"
    timeout = 300
    version = 2  # 2: 800 light-load tasks per repeat (was 400), 0.5 ms pause

    def setup(self, backend, scenario, percentile):
        h.pq()
        h.need_backend(backend)

    def _get(self, backend, scenario, key):
        v = h.shared(f"latency-{backend}", lambda: measure_all(backend))[scenario][key]
        if v is None:
            raise RuntimeError("this commit does not record finished_at")
        return v

    def track_to_start(self, backend, scenario, percentile):
        return self._get(backend, scenario, "start_" + percentile)

    track_to_start.pretty_name = "Latency: enqueue -> handler start (ms)"

    def track_to_completion(self, backend, scenario, percentile):
        return self._get(backend, scenario, "done_" + percentile)

    track_to_completion.pretty_name = "Latency: enqueue -> completed (finished_at, ms)"


class IdleWorker:
    """CPU an idle Worker in its own process burns while polling for work."""

    params = [h.BACKENDS]
    param_names = ["backend"]
    unit = "% of a core"
    timeout = 120
    version = 1

    def setup(self, backend):
        h.pq()
        h.need_backend(backend)

    def track_idle_cpu(self, backend):
        def measure():
            store = h.Store(backend, "idle")
            try:
                loc = store.location()

                async def make():
                    async with h.pq().Queue(loc, durability="normal"):
                        pass

                h.run(make)
                kid = h.start_children("idle", [(loc, IDLE_SECONDS)])[0]
                try:
                    res = kid.recv()
                finally:
                    kid.close()
                return h.median(100.0 * w["cpu"] / w["wall"] for w in res["windows"])
            finally:
                store.cleanup()

        return h.shared(f"idle-cpu-{backend}", measure)

    track_idle_cpu.pretty_name = "Latency: idle Worker CPU use (% of one core)"
