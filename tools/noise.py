"""`make noise`: how far apart runs of the same code land on this machine, per figure.

In a throwaway clone it commits a comment-only change B on top of HEAD (A), then runs
`asv continuous A B` ROUNDS times: every benchmark is measured 2 x ROUNDS times on the
same code.  The last LOAD_ROUNDS of those rounds run under a background load that it
starts and stops itself (tools/load.py Spinners: by default one process per core, each
busy half of every 100 ms), because the gate is used on a shared machine with other
jobs running: a band measured only on a quiet machine is too narrow for a gate run
under load (last session: a comment-only commit failed 3 times out of 3, all on
wall-clock figures whose quiet bands were narrow).  A figure the load moves a lot gets
a wide band and `make compare` shows it "not gated: too noisy here" instead of crying
wolf.  For each figure it records the values and its same-code spread:

  band        largest / smallest of those values (1.0 = identical every time); the
              slowdown `make compare` must see before it calls the figure slower is
              taken from it (tools/compare.py: thresholds)
  abs_spread  largest - smallest, in the figure's unit: the threshold of figures judged
              on an absolute scale (lost tasks, errors, RSS growth), which can be 0
  band_quiet  the band of the values measured without the tool's background load
              (information: how much of the band the load made; "quiet" means no load of
              ours: other jobs may still run, each round's load average is recorded)
  conditions  beside each value, "quiet" or "load"

and writes benchmarks/noise.json (kept in the repository, so the gate of every pull
request reads it), with the machine, its cores, the background load, the 1-minute load
average sampled through each round (max and mean; "load_average_max" over the run is
what `make compare` compares its own load with), the date, the commit and the command.

Wall time: each round is one `asv continuous` of the two commits, about as long as one
`make compare` of the whole suite: the last whole-suite run (3 rounds, quiet, before the
loaded round existed) took 37 min here, 03:01-03:38 UTC; a loaded round runs slower, so
count on ~40-45 min.  `BENCH=regex` measures one family (BENCH='^operations[.]Get',
NOISE_ROUNDS=2, one of them loaded: 4m54s at a load average of 6-9).  Each round's
seconds are written to the file (round_loads).  Entries of benchmarks not measured in this run are kept, so
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
import time

from asv.config import Config

from . import compare, pg_server
from .commands import git
from .load import LoadSampler, Spinners, loadavg
from .machine import MACHINE, MACHINE_ARGS, ensure_machine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "noise.json")
# each round measures the two same-code commits once: 2 values per figure per round
DEFAULT_ROUNDS = -(-compare.MIN_BAND_VALUES // 2)
# Of those, the last one runs under the background load: 2 of a figure's 6 values.
DEFAULT_LOAD_ROUNDS = 1


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


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


def summarize(values_by_name, conditions_by_name=None, kinds=None):
    """{name: entry} of the figures with at least two values; conditions_by_name gives,
    beside each value, the condition it was measured under ("quiet" or "load"); kinds,
    each figure's unit and benchmark type (asv's), which `make compare` needs to know a
    figure's rule before it measures anything (tools/compare.py too_noisy_to_gate)."""
    out = {}
    for name, values in values_by_name.items():
        band, abs_spread = spread(values)
        if abs_spread is None:
            continue
        entry = {"band": None if band is None else round(band, 6),
                 "abs_spread": abs_spread, "values": values}
        conds = (conditions_by_name or {}).get(name)
        if conds:
            quiet, _ = spread([v for v, c in zip(values, conds) if c == "quiet"])
            entry["band_quiet"] = None if quiet is None else round(quiet, 6)
            entry["conditions"] = conds
        kind = (kinds or {}).get(name)
        if kind:
            entry.update(kind)
        out[name] = entry
    return out


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                    help=f"asv continuous runs of A and B (default {DEFAULT_ROUNDS}: the "
                         f"{compare.MIN_BAND_VALUES} values a band needs to gate a figure)")
    ap.add_argument("--load-rounds", type=int, default=DEFAULT_LOAD_ROUNDS,
                    help=f"how many of the rounds (the last ones) run under a background load "
                         f"(default {DEFAULT_LOAD_ROUNDS}; 0: all quiet)")
    ap.add_argument("--load-procs", type=int, default=os.cpu_count() or 1,
                    help="spinner processes of the background load (default: one per core)")
    ap.add_argument("--load-duty", type=float, default=0.5,
                    help="fraction of each 100 ms a spinner is busy (default 0.5)")
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
    """({figure: [values]}, {figure: [conditions]}, [per-round info]): `asv continuous A B`
    args.rounds times, run in the clone (the cwd), the last args.load_rounds of them under
    the background load."""
    conf = Config.load("asv.conf.json")
    values, conditions, rounds = {}, {}, []
    for r in range(args.rounds):
        loaded = r >= args.rounds - args.load_rounds
        spin = Spinners(args.load_procs if loaded else 0, args.load_duty)
        print(f"\n==> round {r + 1}/{args.rounds}" + (f", under load: {spin.describe()}" if loaded else ", quiet"),
              flush=True)
        cmd = [sys.executable, "-m", "asv", "continuous", "--factor", "1.0", *MACHINE_ARGS, a, b]
        if args.bench:
            cmd += ["--bench", args.bench]
        if args.quick:
            cmd.append("--quick")
        if args.asv_rounds:
            cmd += ["--attribute", f"rounds={args.asv_rounds}"]
        t0 = time.monotonic()
        with spin, LoadSampler() as seen:
            subprocess.call(cmd)
        rounds.append({"round": r + 1, "load": spin.describe() if loaded else "none (quiet)",
                       "load_average_max": seen.max, "load_average_mean": seen.mean,
                       "seconds": round(time.monotonic() - t0)})
        print(f"round {r + 1}: {rounds[-1]['seconds']} s, 1-minute load average max {seen.max}, "
              f"mean {seen.mean}", flush=True)
        for commit in (a, b):
            for name, (v, _ss, _key) in compare.load(conf, MACHINE, commit).items():
                values.setdefault(name, []).append(v)
                conditions.setdefault(name, []).append("load" if loaded else "quiet")
    return values, conditions, rounds


def kinds_of(conf, commit):
    """{figure: {"unit", "type"}} from asv's benchmarks.json, for the figures of one commit."""
    try:
        with open(os.path.join(conf.results_dir, "benchmarks.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return {}
    out = {}
    for name, (_v, _ss, key) in compare.load(conf, MACHINE, commit).items():
        m = meta.get(key) or {}
        if m.get("unit") is not None:
            out[name] = {"unit": m["unit"], "type": m.get("type") or key.rsplit(".", 1)[-1].split("_", 1)[0]}
    return out


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
    doc = {"about": "Same-code spread of each benchmark on the machine below (tools/noise.py), "
                    "measured partly under a background load the tool started (last_run: "
                    "background_load, round_loads, load_average_max); tools/compare.py takes each "
                    "figure's threshold from it and compares its own load with load_average_max.",
           "last_run": run_info,
           "runs": ([] if args.fresh else _old_runs(args.out)) + [run_info],
           "benchmarks": dict(sorted({**old, **measured}.items()))}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


def main(argv=None):
    args = parse_args(argv)
    if not 0 <= args.load_rounds <= args.rounds:
        raise SystemExit(f"--load-rounds must be between 0 and --rounds ({args.rounds}), got {args.load_rounds}")
    try:
        Spinners(args.load_procs, args.load_duty)
    except ValueError as e:
        raise SystemExit(str(e)) from None
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
            values, conditions, rounds = measure(args, a, b)
        kinds = kinds_of(Config.load("asv.conf.json"), a)
        load_after = loadavg()
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    measured = summarize(values, conditions, kinds)
    maxima = [r["load_average_max"] for r in rounds if r["load_average_max"] is not None]
    write(args, measured, {
        "machine": MACHINE, "cpus": os.cpu_count(),
        "load_average_before": load_before, "load_average_after": load_after,
        "load_average_max": max(maxima) if maxima else None,
        "background_load": (f"last {args.load_rounds} of {args.rounds} rounds: "
                            + Spinners(args.load_procs, args.load_duty).describe()) if args.load_rounds else "none",
        "round_loads": rounds,
        "date": started, "commit": a, "postgresql": pg.unmeasured or "measured", "rounds": args.rounds, "bench": args.bench, "quick": args.quick,
        "command": "make noise" + (f" NOISE_ROUNDS={args.rounds}" if args.rounds != DEFAULT_ROUNDS else "")
                   + (f" NOISE_LOAD_ROUNDS={args.load_rounds}" if args.load_rounds != DEFAULT_LOAD_ROUNDS else "")
                   + (f" BENCH='{args.bench}'" if args.bench else "") + (" NOISE_FRESH=1" if args.fresh else "")})
    print(f"\nSame-code spread of {len(measured)} figures ({2 * args.rounds} values each), widest first:")
    if 2 * args.rounds < compare.MIN_BAND_VALUES:
        print(f"NOTE: {2 * args.rounds} values per figure: make compare gates no wall-clock figure on a band "
              f"from fewer than {compare.MIN_BAND_VALUES} (NOISE_ROUNDS={DEFAULT_ROUNDS} or more)")
    for name, e in sorted(measured.items(), key=lambda kv: -(kv[1]["band"] or float("inf"))):
        band = "crosses 0" if e["band"] is None else f"{e['band']:.4f}"
        quiet = e.get("band_quiet")
        quiet = "" if quiet is None or "load" not in e.get("conditions", []) else f" (quiet only {quiet:.4f})"
        print(f"  {band:>10}  abs {e['abs_spread']:.4g}  {name}{quiet}")
    print(f"machine {MACHINE}, {os.cpu_count()} cores, load average before {load_before}, after {load_after}")
    for r in rounds:
        print(f"  round {r['round']} ({r['seconds']} s): load {r['load']}; 1-minute load average max {r['load_average_max']}, "
              f"mean {r['load_average_mean']}")
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
