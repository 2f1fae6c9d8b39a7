"""Each benchmark figure sees the fault its name promises to see.

A fault (tests/bench_faults/sitecustomize.py) is injected into the benchmark process and
every child process it starts; the figure's measurement then runs at the suite's smoke
sizes, and the figure must show the fault. No wall-clock speed is asserted: the faults
are large (tens of milliseconds, megabytes, whole duplicate tasks) against what they are
compared with, and the checks are one-sided.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAULTS = os.path.join(ROOT, "tests", "bench_faults")


def measure(expr: str, fault: str = "", timeout: float = 300) -> object:
    """Evaluate `expr` (with the benchmarks package importable) in a fresh process, with `fault` injected."""
    env = dict(os.environ)
    env["PRISMQ_BENCH_SMOKE"] = "1"
    env.pop("PRISMQ_BENCH_PG", None)
    env.pop("PRISMQ_BENCH_RUN", None)
    env["PRISMQ_TEST_FAULT"] = fault
    env["PYTHONPATH"] = os.pathsep.join([FAULTS, ROOT] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    code = f"import json, benchmarks.latency, benchmarks.memory, benchmarks.concurrency as c; import benchmarks\n" \
           f"from benchmarks import latency, memory, concurrency\nprint(json.dumps({expr}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_idle_cpu_sees_a_cost_paid_once_per_poll_interval():
    # 20 ms of CPU per idle round trip at a 1 s poll interval: about 2 % of a core on top
    # of what an idle Worker uses anyway; the figure must show at least most of it.
    assert measure("latency.IdleWorker().track_idle_cpu('sqlite')", fault="idle_cpu") >= 1.4


def test_completion_latency_includes_the_acknowledgement():
    # Every acknowledging round trip waits 60 ms: a task is completed (visible to another
    # connection) at least 60 ms after its handler started, whatever the scenario.
    b = "latency.EnqueueToHandler()"
    res = measure("{sc: [%s.track_to_start('sqlite', sc, 'p50'), %s.track_to_completion('sqlite', sc, 'p50')]"
                  " for sc in latency.SCENARIOS}" % (b, b), fault="slow_ack")
    for scenario, (start, done) in res.items():
        assert done - start >= 50, (scenario, start, done)


def test_steady_latency_load_is_pinned():
    # The load must not follow how fast this commit drains: with every idle round trip
    # made slower, the steady load is the same constant.
    plain = measure("latency.measure_all()")
    slowed = measure("latency.measure_all()", fault="slow_ack")
    assert plain["load"] == slowed["load"] == {"steady_tasks_per_s": 2500.0, "steady_batch": 5}
