#!/usr/bin/env python3
"""`make noise`: how far apart two runs of the same code land on this machine.

In a throwaway clone it commits a comment-only change B on top of HEAD (A),
then runs `asv continuous A B` ROUNDS times (each round benchmarks both, with
asv's interleaved rounds, as `make compare` does) and collects, for every
benchmark, the slowdown ratio B/A in the benchmark's own direction (> 1:
"slower").  Since A and B are the same code, every ratio away from 1 is noise.
It prints the spread, and how many benchmarks `make compare` would wrongly
call slower at each candidate factor; .asv/noise.json keeps the numbers.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from asv.config import Config  # noqa: E402

import compare  # noqa: E402
from bench import MACHINE, MACHINE_ARGS, ensure_machine  # noqa: E402

CANDIDATES = [1.05, 1.1, 1.15, 1.2, 1.25, 1.3, 1.4, 1.5, 2.0]


def sh(cmd, cwd):
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--asv-rounds", type=int, default=0, help="asv rounds per commit (-a rounds=N)")
    ap.add_argument("--out", default=os.path.join(ROOT, ".asv", "noise.json"))
    args = ap.parse_args(argv)

    work = tempfile.mkdtemp(prefix="asv-noise-")
    clone = os.path.join(work, "repo")
    try:
        sh(["git", "clone", "-q", ROOT, clone], ROOT)
        git = ["git", "-c", "user.name=noise", "-c", "user.email=noise@example.invalid"]
        a = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                           capture_output=True, text=True).stdout.strip()
        with open(os.path.join(clone, "asv.conf.json"), "a") as f:
            f.write("\n")  # same code, different commit
        sh([*git, "commit", "-qam", "noise: same code"], clone)
        b = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                           capture_output=True, text=True).stdout.strip()
        with open("/proc/loadavg") as f:
            load_before = f.read().split()[:3]
        os.chdir(clone)
        ensure_machine()
        conf = Config.load("asv.conf.json")
        ratios = {}
        significant = {f: set() for f in CANDIDATES}
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
            for f in CANDIDATES:
                rows, _bad = compare.judge(conf, MACHINE, a, b, f, "benchmarks/targets.json")
                for name, _v1, _v2, slowdown, _better, verdict in rows:
                    if f == CANDIDATES[0] and slowdown is not None:
                        ratios.setdefault(name, []).append(slowdown)
                    if verdict == "SLOWER":
                        significant[f].add((r, name))
        worst = sorted(((max(max(v), 1 / min(v)), k) for k, v in ratios.items()), reverse=True)
        print("\nSame-code slowdown ratios (B/A in each benchmark's direction), worst first:")
        for w, name in worst[:25]:
            vals = ", ".join(f"{x:.3f}" for x in ratios[name])
            print(f"  {w:6.3f}  {name}: {vals}")
        all_r = [x for v in ratios.values() for x in v]
        print(f"\n{len(ratios)} benchmarks x {args.rounds} rounds; ratios from "
              f"{min(all_r):.3f} to {max(all_r):.3f}")
        print("False 'slower' verdicts per factor (asv statistics + factor), over all rounds:")
        for f in CANDIDATES:
            print(f"  factor {f:<5} {len(significant[f])}")
        with open("/proc/loadavg") as f:
            load_after = f.read().split()[:3]
        print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores)")
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump({"rounds": args.rounds, "bench": args.bench, "quick": args.quick, "load_before": load_before, "load_after": load_after,
                       "ratios": ratios,
                       "false_slower": {str(f): sorted(map(list, s)) for f, s in significant.items()}},
                      fh, indent=1)
        print(f"written to {args.out}")
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
