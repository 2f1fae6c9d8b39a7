"""Faults the benchmark figures must see, injected into every Python process of a test.

tests/test_benchmark_faults.py puts this directory first on PYTHONPATH and names one
fault in PRISMQ_TEST_FAULT; Python imports this module at start-up (site.py imports
`sitecustomize`), so the benchmark process and every child it starts carry the same
fault. Each fault breaks prismq_queue in the way one benchmark's name promises to see:

  idle_cpu   every idle round trip of a Worker (nothing acknowledged, nothing claimed)
             burns 20 ms of CPU: about 2 % of a core at the default 1 s poll interval
  slow_ack   every round trip that acknowledges finished tasks waits 60 ms first
  leak       every Task a Worker starts is kept in a module-level list
  short_lease  every claim takes a 1 ms lease, so other processes claim the same task
             again and the first holder's `complete` raises LeaseLost
  log_batches  every enqueue_many of "lat" tasks appends its size to the file named by
             PRISMQ_TEST_LOG (what load a latency scenario really offered)
  peer_fails litequeue (a peer library) raises on every acknowledgement (done)
"""

import os

FAULTS = [f for f in os.environ.get("PRISMQ_TEST_FAULT", "").split(",") if f]  # one or more
KEPT = []  # the leak's victims


def _burn(seconds):
    import time

    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _install(FAULT):
    import asyncio

    from prismq_queue.queue import Queue
    from prismq_queue.worker import Worker

    if FAULT in ("idle_cpu", "slow_ack"):
        cycle = Queue.round_trip  # the Worker's one call per round trip

        async def faulty_cycle(self, finishes, request, **options):
            if FAULT == "slow_ack" and finishes:
                await asyncio.sleep(0.06)
            out = await cycle(self, finishes, request, **options)
            if FAULT == "idle_cpu" and not finishes and not out.tasks:
                _burn(0.02)
            return out

        Queue.round_trip = faulty_cycle
    elif FAULT == "leak":
        start_all = Worker._start_all

        def leaky_start_all(self, tasks):
            KEPT.extend(tasks)
            return start_all(self, tasks)

        Worker._start_all = leaky_start_all
    elif FAULT == "cpu_per_task":
        start_all = Worker._start_all

        def costly_start_all(self, tasks):
            _burn(0.0002 * len(tasks))  # 200 us of CPU per task a Worker starts
            return start_all(self, tasks)

        Worker._start_all = costly_start_all
    elif FAULT == "log_batches":
        enqueue_many = Queue.enqueue_many

        async def logged(self, items, *args, **kwargs):
            items = list(items)
            if items and items[0][0] == "lat":
                with open(os.environ["PRISMQ_TEST_LOG"], "a") as fh:
                    fh.write(f"{len(items)}\n")
            return await enqueue_many(self, items, *args, **kwargs)

        Queue.enqueue_many = logged
    elif FAULT == "peer_fails":
        import litequeue

        def broken_done(self, *args, **kwargs):
            raise RuntimeError("injected: litequeue done failed")

        litequeue.LiteQueue.done = broken_done
    elif FAULT == "short_lease":
        claim = Queue.claim

        async def short_claim(self, worker_id, limit=1, *args, **kwargs):
            kwargs["lease_seconds"] = 0.001
            return await claim(self, worker_id, limit, *args, **kwargs)

        Queue.claim = short_claim
    else:
        raise SystemExit(f"sitecustomize: unknown PRISMQ_TEST_FAULT {FAULT!r}")


for _fault in FAULTS:
    _install(_fault)
