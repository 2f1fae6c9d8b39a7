"""`make noise`: how far apart runs of the same code land on this machine, per figure.

In a throwaway clone it commits a comment-only change B on top of HEAD (A), then runs
`asv continuous A B` ROUNDS times: every benchmark is measured 2 x ROUNDS times on the
same code.  For each figure it records the values and its same-code spread:

  band        largest / smallest of those values (1.0 = identical every time); the
              slowdown `make compare` must see before it calls the figure slower is
              taken from it (tools/compare.py: thresholds)
  abs_spread  largest - smallest, in the figure's unit: the threshold of figures judged
              on an absolute scale (lost tasks, errors, RSS growth), which can be 0

and writes benchmarks/noise.json (kept in the repository, so the gate of every pull
request reads it), with the machine, its load average before and after, the date, the
commit and the command.  Entries of benchmarks not measured in this run are kept, so
one family can be measured again alone (BENCH=regex).
"""
import argparse
import datetime
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

from asv.config import Config

from . import compare, pg_server
from .commands import git
from .machine import MACHINE, MACHINE_ARGS, ensure_machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "noise.json")
# each round measures the two same-code commits once: 2 values per figure per round
DEFAULT_ROUNDS = -(-compare.MIN_BAND_VALUES // 2)


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return [float(x) for x in f.read().split()[:3]]
    except OSError:
        return None


def spread(values):
    """band (max/min, 1.0 when every value is the same; None when they cross or touch 0)
    and abs_spread (max - min) of one figure's same-code values."""
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if len(vals) < 2:
        return None, None
    lo, hi = min(vals), max(vals)
    if lo == hi:
        band = 1.0
    elif lo > 0:
        band = hi / lo
    elif hi < 0:
        band = lo / hi
    else:
        band = None  # a figure at or across 0 has no ratio: only abs_spread judges it
    return band, hi - lo


def summarize(values_by_name):
    out = {}
    for name, values in values_by_name.items():
        band, abs_spread = spread(values)
        if abs_spread is None:
            continue
        out[name] = {"band": None if band is None else round(band, 6),
                     "abs_spread": abs_spread, "values": values}
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                    help=f"asv continuous runs of A and B (default {DEFAULT_ROUNDS}: the "
                         f"{compare.MIN_BAND_VALUES} values a band needs to gate a figure)")
    ap.add_argument("--bench", default="", help="regex: only these benchmarks (asv -b)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asv-rounds", type=int, default=0, help="asv rounds per commit (-a rounds=N)")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--fresh", action="store_true", help="drop the entries this run did not measure")
    return ap.parse_args(argv)


def same_code_pair(clone):
    """Commit a comment-only change B on top of the clone's HEAD A: (A, B), the same code."""
    a = git("rev-parse", "HEAD", cwd=clone)
    with open(os.path.join(clone, "asv.conf.json"), "a") as f:
        f.write("\n")  # same code, different commit
    git("-c", "user.name=noise", "-c", "user.email=noise@example.invalid",
        "commit", "-qam", "noise: same code", cwd=clone)
    return a, git("rev-parse", "HEAD", cwd=clone)


def measure(args, a, b):
    """{figure: [values]}: `asv continuous A B` args.rounds times, run in the clone (the cwd)."""
    conf = Config.load("asv.conf.json")
    values = {}
    for r in range(args.rounds):
        print(f"\n==> round {r + 1}/{args.rounds}", flush=True)
        cmd = [sys.executable, "-m", "asv", "continuous", "--factor", "1.0", *MACHINE_ARGS, a, b]
        if args.bench:
            cmd += ["--bench", args.bench]
        if args.quick:
            cmd.append("--quick")
        if args.asv_rounds:
            cmd += ["--attribute", f"rounds={args.asv_rounds}"]
        subprocess.call(cmd)
        for commit in (a, b):
            for name, (v, _ss, _key) in compare.load(conf, MACHINE, commit).items():
                values.setdefault(name, []).append(v)
    return values


def write(args, measured, run_info):
    """benchmarks/noise.json: this run's figures over the entries kept from earlier runs."""
    old = {}
    if not args.fresh and os.path.exists(args.out):
        try:
            with open(args.out) as f:
                old = json.load(f).get("benchmarks", {})
        except (OSError, ValueError):
            old = {}
    for entry in measured.values():
        entry["run"] = run_info["date"]
    doc = {"about": "Same-code spread of each benchmark on the machine below (tools/noise.py); "
                    "tools/compare.py takes each figure's threshold from it.",
           "last_run": run_info,
           "runs": ([] if args.fresh else _old_runs(args.out)) + [run_info],
           "benchmarks": dict(sorted({**old, **measured}.items()))}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


def main(argv=None):
    args = parse_args(argv)
    work = tempfile.mkdtemp(prefix="asv-noise-")
    clone = os.path.join(work, "repo")
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        sh(["git", "clone", "-q", ROOT, clone], ROOT)
        a, b = same_code_pair(clone)
        load_before = loadavg()
        os.chdir(clone)
        ensure_machine()
        # the PostgreSQL figures' servers, started here and always stopped (tools/pg_server.py)
        with pg_server.bench_servers() as pg:
            values = measure(args, a, b)
        load_after = loadavg()
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    measured = summarize(values)
    write(args, measured, {
        "machine": MACHINE, "cpus": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": load_after,
        "date": started, "commit": a, "postgresql": pg.unmeasured or "measured", "rounds": args.rounds, "bench": args.bench, "quick": args.quick,
        "command": "make noise" + (f" NOISE_ROUNDS={args.rounds}" if args.rounds != DEFAULT_ROUNDS else "")
                   + (f" BENCH='{args.bench}'" if args.bench else "")})
    print(f"\nSame-code spread of {len(measured)} figures ({2 * args.rounds} values each), widest first:")
    if 2 * args.rounds < compare.MIN_BAND_VALUES:
        print(f"NOTE: {2 * args.rounds} values per figure: make compare gates no wall-clock figure on a band "
              f"from fewer than {compare.MIN_BAND_VALUES} (NOISE_ROUNDS={DEFAULT_ROUNDS} or more)")
    for name, e in sorted(measured.items(), key=lambda kv: -(kv[1]["band"] or float("inf"))):
        band = "crosses 0" if e["band"] is None else f"{e['band']:.4f}"
        print(f"  {band:>10}  abs {e['abs_spread']:.4g}  {name}")
    print(f"machine {MACHINE}, {os.cpu_count()} cores, load average before {load_before}, after {load_after}")
    if pg.unmeasured:
        print(f"PostgreSQL figures NOT MEASURED (no band for them): {pg.unmeasured}")
    print(f"written to {args.out}")
    return 0


def _old_runs(path):
    try:
        with open(path) as f:
            return json.load(f).get("runs", [])
    except (OSError, ValueError):
        return []


if __name__ == "__main__":
    sys.exit(main())
