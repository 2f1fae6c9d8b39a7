#!/usr/bin/env python3
"""`make compare`: the pull-request regression gate.

Benchmarks HEAD against its merge base with BASE (default main; if HEAD is
that merge base, against HEAD^) with `asv continuous`, prints asv's
comparison table every time (`asv continuous` stops before printing it when
a benchmark failed, so `asv compare` is run afterwards), then judges each
benchmark in its own direction and exits 1 on a significant slowdown or a
newly failing benchmark, 0 otherwise.

Direction: time_, peakmem_ and mem_ benchmarks are better lower.  asv itself
takes every rise of a track_ benchmark as "worse", which is wrong for a rate
such as tasks/s; here a track_ benchmark is better higher when
benchmarks/targets.json says so for it, or when its unit is a rate, ratio,
efficiency, fairness or speedup ("/s", "ratio", "of ideal", "Jain index",
"x 1-process rate"), and better lower otherwise (ms, MiB, errors, "fraction of
claims", ...).

Significant means both: the change is beyond FACTOR (slowdown = after/before
for lower-is-better, before/after for higher-is-better; > 1 is slower) and
asv's own statistics say the two sample sets differ (as `asv compare` does).
"""
import argparse
import json
import os
import re
import subprocess
import sys

from asv.commands.compare import _is_result_better, unroll_result
from asv.config import Config
from asv.results import iter_results_for_machine_and_hash

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import MACHINE, MACHINE_ARGS, ensure_machine  # noqa: E402

# Units that mean "higher is better": rates, ratios (ours / a peer's), efficiency
# ("fraction of ideal"), fairness, speedups ("x 1-process rate").  Anything else,
# e.g. ms, MiB, errors, tasks lost, "fraction of claims" (a conflict rate), is lower.
HIGHER_UNIT_RE = re.compile(r"/\s*s\b|\bper\s+s(ec(ond)?)?\b|\bratio\b|of ideal|efficien|fairness|"
                            r"\bjain\b|speedup|^\s*(x|×)\s", re.I)


def git(*args):
    return subprocess.run(["git", *args], check=True, capture_output=True, text=True).stdout.strip()


def asv(*args):
    print("$ asv " + " ".join(args), flush=True)
    return subprocess.call([sys.executable, "-m", "asv", *args])


def directions(targets_path):
    out = {}
    try:
        with open(targets_path) as f:
            for e in json.load(f):
                if "better" in e and not e.get("peer"):
                    out[e["name"]] = e["better"]
    except (OSError, ValueError):
        pass
    return out


def better_of(name, meta, declared):
    kind = (meta.get("type") or name.rsplit(".", 1)[-1].split("_", 1)[0])
    if kind in ("time", "peakmem", "memory", "mem"):
        return "lower"
    if name in declared:
        return declared[name]
    unit = meta.get("unit") or ""
    return "higher" if HIGHER_UNIT_RE.search(unit) else "lower"


def load(conf, machine, commit):
    """{display name: (value, (stats, samples), benchmark key)} for one commit."""
    out = {}
    for res in iter_results_for_machine_and_hash(conf.results_dir, machine, commit):
        for key in res.get_all_result_keys():
            params = res.get_result_params(key)
            rows = unroll_result(key, params, res.get_result_value(key, params),
                                 res.get_result_stats(key, params),
                                 res.get_result_samples(key, params))
            for name, value, stats, samples in rows:
                out[name] = (value, (stats, samples), key)
    return out


def isnan(v):
    return v is not None and v != v


# The peers' own rates: a pull request cannot change huey or sqlite3, so any change
# there is the machine's noise; shown, never failed on.  prismq_queue's ratios stay judged.
DEFAULT_IGNORE = r"^peers\.PeerRates\.track_rate\('(?!prismq_queue')"


def judge(conf, machine, base, head, factor, targets_path, ignore=DEFAULT_IGNORE):
    """Rows of (name, before, after, slowdown, better, verdict) and the overall failure flag."""
    try:
        with open(os.path.join(conf.results_dir, "benchmarks.json")) as f:
            meta = json.load(f)
    except OSError:
        raise SystemExit("GATE FAILED: asv produced no results (see the asv output above: "
                         "an environment or build failure?)")
    declared = directions(targets_path)
    r1, r2 = load(conf, machine, base), load(conf, machine, head)
    if not r1 or not r2:
        raise SystemExit(f"no results for {'base' if not r1 else 'head'} commit on machine {machine}")
    rows, bad = [], False
    for name in sorted(set(r1) | set(r2)):
        v1, ss1, key = r1.get(name, (None, None, None))
        v2, ss2, key2 = r2.get(name, (None, None, None))
        key = key or key2
        better = better_of(key, meta.get(key, {}), declared)
        slowdown, verdict = None, "same"
        if name not in r1:
            verdict = "new"
            if v2 is None:  # a benchmark the change adds, failing
                verdict, bad = "NEWLY FAILING", True
        elif name not in r2:
            verdict = "removed"
        elif v1 is not None and v2 is None:  # passed or skipped before, fails now
            verdict, bad = "NEWLY FAILING", True
        elif v1 is None and v2 is not None:
            verdict = "fixed"
        elif v1 is None or v2 is None or isnan(v1) or isnan(v2):
            verdict = "failed/skipped" if (v1 is None and v2 is None) else "skipped"
        else:
            if v1 == v2:
                slowdown = 1.0
            elif better == "lower":
                slowdown = v2 / v1 if v1 else float("inf")  # 0 -> more (e.g. lost tasks)
            else:
                slowdown = v1 / v2 if v2 else float("inf")
            if better == "lower":
                worse = _is_result_better(v1, v2, ss1, ss2, factor)
                improved = _is_result_better(v2, v1, ss2, ss1, factor)
            else:
                worse = _is_result_better(v2, v1, ss2, ss1, factor)
                improved = _is_result_better(v1, v2, ss1, ss2, factor)
            if worse and ignore and re.search(ignore, name):
                verdict = "slower (ignored: not our code)"
            elif worse:
                verdict, bad = "SLOWER", True
            elif improved:
                verdict = "faster"
            elif slowdown > factor or slowdown < 1 / factor:
                verdict = "same (not significant)"
        rows.append((name, v1, v2, slowdown, better, verdict))
    return rows, bad


def fmt(v):
    if v is None:
        return "failed"
    if isnan(v):
        return "skipped"
    return f"{v:.4g}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="branch or commit; its merge base with HEAD is compared")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--factor", type=float, required=True)
    ap.add_argument("--bench", default="", help="regex: only these benchmarks (asv -b)")
    ap.add_argument("--quick", action="store_true", help="one sample each (statistics then use only the factor)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="asv rounds per commit (interleaved; default: each benchmark's own, 2)")
    ap.add_argument("--config", default="asv.conf.json")
    ap.add_argument("--targets", default="benchmarks/targets.json")
    ap.add_argument("--no-run", action="store_true", help="judge existing results only")
    ap.add_argument("--ignore", default=DEFAULT_IGNORE,
                    help="regex of benchmarks shown but never failed on (default: the peers' own rates)")
    args = ap.parse_args(argv)

    conf = Config.load(args.config)
    head = git("rev-parse", args.head)
    base = git("merge-base", args.base, head)
    if base == head:
        base = git("rev-parse", f"{head}^")
        print(f"HEAD is on {args.base}: comparing it with its parent")
    print(f"base {git('log', '-1', '--format=%h %s', base)}\nhead {git('log', '-1', '--format=%h %s', head)}")
    print(f"factor {args.factor} (ratio after/before; > 1 is slower)")
    ensure_machine()
    machine = MACHINE

    bench = ["--bench", args.bench] if args.bench else []
    if not args.no_run:
        cont = ["continuous", "--factor", str(args.factor), "--show-stderr", "--split", *bench,
                *MACHINE_ARGS]
        if args.quick:
            cont.append("--quick")
        if args.rounds:
            cont += ["--attribute", f"rounds={args.rounds}"]
        rc = asv(*cont, base, head)
        if rc not in (0, 1, 2):
            raise SystemExit(f"asv continuous failed (exit {rc})")
        # rc 1: asv's own verdict (direction-blind) or an error; 2: a benchmark failed,
        # in which case asv did not print the table.  Either way: print it and judge below.
    print("\nasv compare (asv's view: a rise is always 'worse', also for rates):", flush=True)
    asv("compare", "--factor", str(args.factor), "--split", "--machine", machine, base, head)

    rows, bad = judge(conf, machine, base, head, args.factor, args.targets, args.ignore)
    print(f"\nGate (each benchmark in its own direction; slowdown > 1 is slower; factor {args.factor}):")
    width = max((len(r[0]) for r in rows), default=10)
    print(f"{'benchmark':<{width}}  {'before':>10}  {'after':>10}  {'slowdown':>8}  better  verdict")
    for name, v1, v2, slowdown, better, verdict in rows:
        s = "" if slowdown is None else f"{slowdown:.2f}"
        print(f"{name:<{width}}  {fmt(v1):>10}  {fmt(v2):>10}  {s:>8}  {better:<6}  {verdict}")
    slower = [r[0] for r in rows if r[5] == "SLOWER"]
    failing = [r[0] for r in rows if r[5] == "NEWLY FAILING"]
    if bad:
        print(f"\nGATE FAILED: {len(slower)} significantly slower, {len(failing)} newly failing.")
        for n in slower:
            print(f"  slower: {n}")
        for n in failing:
            print(f"  newly failing: {n}")
        return 1
    print(f"\nGATE PASSED: no benchmark significantly slower than factor {args.factor}, none newly failing.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
