"""Why a cost figure rose: the Python functions whose work changed most between two commits.

For each failing cost figure (benchmarks/cost.py) the figure's own workload
(benchmarks/_cost_child.py) runs once on the base's and once on the head's
prismq_queue (each extracted with `git archive`, imported through PYTHONPATH),
with a deterministic profile: bytecodes executed and calls made per function
(file:function), counted by a trace function, no clock.  Same code gives the same
profile, except in threads that wake on a timer (the WAL checkpointer), so the base
is profiled twice and a function is listed only when its change is beyond 3x its own
wobble between those two: what remains names the functions that do more (or less)
work per operation.  Printed by `make compare` when a cost figure fails;
also usable alone:

    python -m tools.explain BASE HEAD "cost.SQLite.track_instructions('claim_complete_per_task')"
"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .commands import git

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILD = os.path.join(ROOT, "benchmarks", "_cost_child.py")
# operations per profile: enough to dwarf the queue's opening, small enough to trace in seconds
PROFILE_N = {"drain": 400, "enqueue": 200, "enqueue_many": 1000, "claim_complete": 100,
             "get": 200, "stats": 50}
TOP = 12


def op_of(name):
    """The _cost_child op behind a cost figure's asv name, or None."""
    # loaded from its file: benchmarks/ is asv's suite, not a package on sys.path here
    spec = importlib.util.spec_from_file_location("benchmarks_cost", os.path.join(ROOT, "benchmarks", "cost.py"))
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    m = re.match(r"cost\.(\w+)\.track_\w+\((?:'[^']*', )*'([^']+)'\)", name)
    if not m:
        return None
    cls = getattr(cost, m.group(1), None)
    return getattr(cls, "FIGURES", {}).get(m.group(2))


def profile(commit, op, work):
    """{file:function: [calls, bytecodes]} of op's workload on commit's prismq_queue."""
    tree = os.path.join(work, commit[:12])
    if not os.path.isdir(tree):
        os.makedirs(tree)
        archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "prismq_queue"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    n = PROFILE_N[op]
    plan = os.path.join(work, f"plan-{commit[:12]}-{op}.json")
    with open(plan, "w") as f:
        json.dump({"runs": [{op: {"loc": os.path.join(work, f"{commit[:12]}-{op}.db"), "n": n}}]}, f)
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=tree)
    r = subprocess.run([sys.executable, CHILD, "profile", plan, "0"], capture_output=True, text=True,
                       env=env, cwd=work, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"profile of {op} on {commit[:8]} failed:\n{r.stderr[-2000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    if not out["package"].startswith(tree):
        raise RuntimeError(f"the profile imported {out['package']}, not {commit[:8]}'s prismq_queue")
    return out["counts"], n


def differences(before, after, n, again=None):
    """Rows (key, calls before, calls after, bytecodes/op before, after, change/op), largest
    first.  `again` is a second profile of the base: a function whose count moves between two
    runs of the same code (a thread that wakes on a timer) is listed only when its change is
    beyond 3x that wobble."""
    rows = []
    for key in set(before) | set(after):
        c1, o1 = before.get(key, [0, 0])
        c2, o2 = after.get(key, [0, 0])
        if (c1, o1) == (c2, o2):
            continue
        if again is not None:
            wobble = abs(again.get(key, [0, 0])[1] - o1)
            if abs(o2 - o1) <= 3 * wobble:
                continue
        rows.append((key, c1, c2, o1 / n, o2 / n, (o2 - o1) / n))
    rows.sort(key=lambda r: (-abs(r[5]), -abs(r[2] - r[1]), r[0]))
    return rows


def explain(names, base, head, out=sys.stdout):
    """Print, per failing cost figure, the functions whose work changed most."""
    work = tempfile.mkdtemp(prefix="prismq-explain-")
    try:
        for name in names:
            op = op_of(name)
            print(f"\nWhy {name} changed (deterministic profile of its workload: bytecodes and calls "
                  f"per function, {base[:8]} -> {head[:8]}):", file=out)
            if op not in PROFILE_N:
                print("  (no profile for this figure: the PostgreSQL client figures need the server; "
                      "profile its SQLite twin)", file=out)
                continue
            try:
                (b, n), (b2, _), (h, _) = (profile(base, op, work), profile(base, op, work),
                                           profile(head, op, work))
            except Exception as exc:  # noqa: BLE001 - the gate's verdict stands without the profile
                print(f"  profile failed: {exc}", file=out)
                continue
            tot1 = sum(v[1] for v in b.values()) / n
            tot2 = sum(v[1] for v in h.values()) / n
            print(f"  bytecodes per operation: {tot1:,.0f} -> {tot2:,.0f} ({(tot2 / tot1 - 1) * 100:+.2f}%)",
                  file=out)
            rows = differences(b, h, n, again=b2)
            if not rows:
                print("  no Python function's work changed beyond its same-code wobble "
                      "(the change is below Python: C code, SQLite, the data)", file=out)
                continue
            print(f"  {'function (file:function)':<60} {'calls':>17} {'bytecodes/op':>21} {'change/op':>10}",
                  file=out)
            for key, c1, c2, o1, o2, d in rows[:TOP]:
                print(f"  {key:<60} {c1:>8}->{c2:<8} {o1:>10.1f}->{o2:<10.1f} {d:>+10.1f}", file=out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    argv = sys.argv if argv is None else argv
    if len(argv) < 4:
        raise SystemExit(__doc__)
    explain(argv[3:], git("rev-parse", argv[1], cwd=ROOT), git("rev-parse", argv[2], cwd=ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
