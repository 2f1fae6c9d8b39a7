"""`make compare`: the pull-request regression gate.

Benchmarks HEAD against its merge base with BASE (default main; if HEAD is
that merge base, against HEAD^) with `asv continuous`, prints asv's
comparison table every time (`asv continuous` stops before printing it when
a benchmark failed, so `asv compare` is run afterwards), then judges each
figure in its own direction, with a threshold of its own, and exits 1 on a
real slowdown or a newly failing or newly skipped benchmark, 0 otherwise.

Direction: time_, peakmem_ and mem_ benchmarks are better lower.  asv itself
takes every rise of a track_ benchmark as "worse", which is wrong for a rate
such as tasks/s; here a track_ benchmark is better higher when
benchmarks/targets.json says so for it, or when its unit is a rate, ratio,
efficiency, fairness or speedup ("/s", "ratio", "of ideal", "Jain index",
"x 1-process rate"), and better lower otherwise (ms, MiB, errors, "fraction of
claims", instructions, ...).

Thresholds come from each figure's same-code spread in benchmarks/noise.json
(`make noise` measures it; "band" = largest / smallest value of the same code):

* cost figures (unit "instructions", benchmarks/cost.py: counted, not timed)
  fail on a rise of 1% or more, or 3x their own spread when that is larger;
  the gate then prints the functions whose bytecodes and calls changed most
  (tools/explain.py);
* figures that can be 0 (lost tasks, duplicates, errors, rounds: unit "tasks",
  "errors", "rounds") or negative (RSS growth) are judged on an absolute scale:
  they fail when they worsen by at least 1 (count) / 1 MiB (growth), or 3x
  their own absolute spread if that is larger;
* wall-clock figures are gated only by a band that can be believed: one measured
  from at least MIN_BAND_VALUES same-code values, and no wider than NOT_GATED.
  A time_ figure fails when the slowdown is beyond its band (never narrower than
  WALL_FLOOR) AND asv's statistics on the two sample sets agree; a track_ figure
  has no samples, so nothing backs its band up: it fails beyond the band squared
  (TRACK_BAND_POWER);
* a track_ figure whose target in benchmarks/targets.json is a ceiling ("better":
  "lower", a target above 0, e.g. ClaimDepthRatio <= 1.5) is judged against its
  target as well as its band: beyond its band but still at or under its ceiling, it
  is shown "slower beyond its band, meets its target" and does not fail.  Such a
  figure has no samples, and the target is what the project promises for it: a
  same-code commit once moved ClaimDepthRatio 0.80 -> 1.34, beyond its band squared
  and well inside its promise;
* a wall-clock figure judged slower is a suspect, not yet a failure: the gate measures
  just the suspects again on both commits, interleaved (base, head, base, head: a load
  that comes and goes falls on both), and fails only when the re-measurement is judged
  slower by the same rule (beyond its band, asv's statistics agree).  A real slowdown
  is there on every measurement and fails again; a same-code pair that lands outside
  its band by chance rarely does so twice.  More than MAX_SUSPECTS suspects are not
  re-measured (that would cost a second run of the suite): they fail;
* every other wall-clock figure is shown and labelled, never failed and never
  silently passed: "not gated: too noisy here" (band wider than NOT_GATED),
  "not gated: band from 4 values, needs 6" (too few values), "not gated: no
  band measured" (a benchmark missing from the noise file, e.g. a new one:
  `make noise BENCH=regex` measures it).  Only an explicit --factor (make
  compare FACTOR=...) gates those last two kinds, at that factor, and says so.

The verdict line gives the 1-minute load average the gate saw while it measured and
the one the bands were measured at (noise.json); when the gate ran busier, it says
so: its wall-clock verdicts then rest on bands from a quieter machine.

PostgreSQL figures are measured on throwaway loopback servers that the gate starts
and stops itself (tools/pg_server.py, as `make bench` and `make noise` do). Where
PostgreSQL is not installed they are skipped on both commits, and the verdict says
that the gate did not measure them: it does not pass them silently. Every figure skipped on both
commits is listed under the table, with the reason where one is known (asv
stores none for a skip).
"""

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
import time

from asv.commands.compare import _is_result_better, unroll_result
from asv.config import Config
from asv.results import iter_results_for_machine_and_hash

from . import explain, pg_server
from .commands import asv, git
from .load import LoadSampler
from .machine import MACHINE, MACHINE_ARGS, ensure_machine

# Units that mean "higher is better": rates, ratios (ours / a peer's), efficiency
# ("fraction of ideal"), fairness, speedups ("x 1-process rate").  Anything else,
# e.g. ms, MiB, errors, tasks lost, "fraction of claims" (a conflict rate), is lower.
HIGHER_UNIT_RE = re.compile(r"/\s*s\b|\bper\s+s(ec(ond)?)?\b|\bratio\b|of ideal|efficien|fairness|"
                            r"\bjain\b|speedup|^\s*(x|×)\s", re.I)


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


def ceilings(targets_path, meta):
    """{display name: target} of the figures whose target is a ceiling: better "lower"
    and a target above 0 (a target of 0 lost tasks is an absolute count, judged so)."""
    out = {}
    try:
        with open(targets_path) as f:
            entries = json.load(f)
    except (OSError, ValueError):
        return out
    for e in entries:
        target = e.get("target")
        if e.get("peer") or e.get("better") != "lower" or not isinstance(target, (int, float)) or target <= 0:
            continue
        params = e.get("params") or {}
        combo = [str(params.get(p)) for p in (meta.get(e["name"]) or {}).get("param_names", [])]
        out[f"{e['name']}({', '.join(combo)})" if combo else e["name"]] = target
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
# there is the machine's noise; shown, never failed on.  prismq_queue's own rates
# (prismq_queue on SQLite, prismq_queue_pg on PostgreSQL) and every ratio stay judged.
DEFAULT_IGNORE = r"^peers\.PeerRates\.track_rate\('(?!prismq_queue(_pg)?')"

ASV_FACTOR = 1.5       # only for asv's own table, printed beside the gate's (it judges nothing)
COST_MIN = 1.01        # a cost figure fails on a rise of 1% or more ...
COST_SPREADS = 3       # ... or of 3x its same-code spread, whichever is larger
WALL_FLOOR = 1.10      # six same-code values do not show a wall clock's whole spread
NOT_GATED = 1.5        # a wall-clock band wider than this cannot be gated here
# The fewest same-code values a wall-clock band must come from to gate its figure: 6,
# i.e. 3 rounds of `make noise` (each round measures the two same-code commits once).
# The band is max/min of those values, and a small sample's range underestimates the
# spread: with 4 values (2 rounds, under load) a comment-only commit moved two track_
# figures 1.16x and 1.45x past bands of 1.07 and 1.20. For normal noise, the chance that
# a same-code pair differs by more than the range of n values is 11% at n=4, 6% at n=6.
MIN_BAND_VALUES = 6
# A track_ figure has no samples, so asv's statistics cannot back its band up: it fails
# only beyond band ** 2 (twice the range, on a log scale). For normal noise the chance
# that a same-code pair differs by twice the range of 6 values is 0.7% (1.9% at 1.5x).
TRACK_BAND_POWER = 2
COST_PREFIX = "cost."  # the cost family: instruction counts, which do not move with load
ABS_UNITS = {"tasks": 1, "errors": 1, "rounds": 1}  # counts: 0 -> 1 is a real change
ABS_GROWTH_MIN = 1.0   # MiB: RSS growth wobbles by a few KiB
# Suspects (wall-clock figures judged slower) re-measured before they fail: at most this
# many (each costs its own runs on both commits, ~1 min for an operations.* figure with
# its 1M-row setup, measured under load; the gate's budget is 10 min; last session's
# worst same-code trial had 5), in CONFIRM_ROUNDS asv rounds per commit, interleaved.
MAX_SUSPECTS = 8
CONFIRM_ROUNDS = 2
FAILING = ("SLOWER", "NEWLY FAILING", "NEWLY SKIPPED")


def read_noise(path):
    """benchmarks/noise.json's figures ({name: {"band", "abs_spread"}}), {} if absent."""
    return read_noise_file(path).get("benchmarks", {})


def read_noise_file(path):
    """The whole noise file (figures, runs), {} if absent."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def run_load(run):
    """The highest 1-minute load average a noise run saw: sampled through its rounds
    (load_average_max), or for files from before that, the larger of before and after."""
    if run.get("load_average_max") is not None:
        return run["load_average_max"]
    seen = [la[0] for la in (run.get("load_average_before"), run.get("load_average_after")) if la]
    return max(seen) if seen else None


def bands_load(doc):
    """The load the wall-clock bands were measured at: of the runs those figures' bands come
    from, the lowest run_load (a gate busier than any one of them is busier than some of its
    bands). The cost figures' runs do not count: an instruction count does not move with load,
    and a quiet run that re-measured only them would make every gate look busier than its bands."""
    used = {e.get("run") for name, e in doc.get("benchmarks", {}).items() if not name.startswith(COST_PREFIX)}
    loads = [run_load(r) for r in doc.get("runs", []) if r.get("date") in used]
    loads = [x for x in loads if x is not None]
    return min(loads) if loads else None


def band_values(entry):
    """How many same-code values (not failed, not skipped) an entry's band comes from."""
    return sum(1 for v in entry.get("values") or [] if isinstance(v, (int, float)) and v == v)


def rule_for(name, key, meta, noise, factor=None):
    """How one figure is judged: (kind, threshold, band, note).

    kind "cost": threshold is a slowdown ratio; "absolute": a worsening in the figure's
    unit; "wall": a slowdown ratio (of a time_ figure, asv's statistics must also
    confirm it); "not gated": shown only. factor: None, or the explicit threshold of
    wall-clock figures with no band that can be believed.
    """
    unit = (meta.get("unit") or "").strip()
    entry = noise.get(name) or {}
    band = entry.get("band")
    if unit == "instructions":
        thr = max(COST_MIN, 1 + COST_SPREADS * ((band or 1.0) - 1))
        return "cost", thr, band, f"cost: fails at +{(thr - 1) * 100:.1f}%"
    leaf = key.rsplit(".", 1)[-1]
    if unit in ABS_UNITS or "growth" in leaf:
        floor = ABS_UNITS.get(unit, ABS_GROWTH_MIN)
        thr = max(floor, COST_SPREADS * (entry.get("abs_spread") or 0))
        return "absolute", thr, band, f"absolute: fails at +{thr:g} {unit}"
    if band is None and "abs_spread" in entry:
        return "not gated", None, None, "not gated: too noisy here (crosses 0)"
    n = band_values(entry)
    if band is not None and band > NOT_GATED:
        return "not gated", None, band, f"not gated: too noisy here (band {band:.2f})"
    if band is None or n < MIN_BAND_VALUES:
        why = ("no band measured (make noise BENCH=...)" if band is None
               else f"band from {n} values, needs {MIN_BAND_VALUES}")
        if factor is None:
            return "not gated", None, band, f"not gated: {why}"
        return "wall", factor, band, f"{why}: FACTOR={factor:g} given"
    if is_track(key, meta):
        thr = max(band ** TRACK_BAND_POWER, WALL_FLOOR)
        return "wall", thr, band, f"band {band:.2f} (no samples): fails beyond {thr:.2f}"
    thr = max(band, WALL_FLOOR)
    return "wall", thr, band, f"band {band:.2f}: fails beyond {thr:.2f} if asv's statistics agree"


def is_track(key, meta):
    return (meta.get("type") or key.rsplit(".", 1)[-1].split("_", 1)[0]) == "track"


def is_wall_rule(note):
    """A row judged by a wall-clock rule (not a cost or absolute one), from its rule note."""
    return not note.startswith(("cost", "absolute", "not gated"))


def too_noisy_to_gate(noise):
    """{name: note} of the figures the gate could only show as "not gated: too noisy here":
    a band wider than NOT_GATED (or one crossing 0) in the noise file, judged by the rule
    of the unit and kind the noise run recorded beside it.  The gate does not measure them
    (each would cost minutes per commit and could never fail); it lists them with their
    band.  An entry without a recorded unit (from before units were kept) is measured:
    its rule cannot be known without it."""
    out = {}
    for name, entry in noise.items():
        if "unit" not in entry:
            continue
        key = name.split("(", 1)[0]
        kind, _thr, _band, note = rule_for(name, key, {"unit": entry["unit"], "type": entry.get("type")}, noise)
        if kind == "not gated" and note.startswith("not gated: too noisy here"):
            out[name] = note
    return out


def left_out_row(name, note):
    """The table row of a figure the gate did not measure: no value, its band's note."""
    nan = float("nan")
    return (name, nan, nan, None, "", f"{note}: NOT MEASURED by the gate (ALL=1 measures it)", note)


def nothing_left_to_measure(bench, noise, left_out):
    """True when `bench` names figures and every one of them the noise file knows is left
    out: asv would be asked to measure nothing ("No benchmarks selected") and leave no
    results to judge.  The noise file lists the whole suite as of its last run; a new
    benchmark that `bench` also matches is not in it, so the message says ALL=1 measures
    everything selected."""
    if not bench or not left_out:
        return False
    known = [name for name in noise if re.search(bench, name)]
    return bool(known) and all(name in left_out for name in known)


def selection_regex(bench, skip):
    """One asv -b regex: the benchmarks `bench` selects (all when empty) except the figures
    in `skip`.  asv matches a parametrised benchmark as `name(param, ...)`, so a single
    parameter combination can be left out; asv ORs several -b regexes, so both conditions
    go into one pattern (a lookahead for `bench`, a negative one for `skip`)."""
    if not skip:
        return bench
    parts = [f"(?=.*?(?:{bench}))" if bench else "",
             "(?!(?:" + "|".join(re.escape(n) for n in sorted(skip)) + ")$)"]
    return "^" + "".join(parts)


def suspects_of(rows):
    """The wall-clock figures judged slower: to be measured again before they fail."""
    return [r[0] for r in rows if r[5] == "SLOWER" and is_wall_rule(r[6])]


def confirm(first, second, suspects):
    """Rows after a re-measurement of the suspects (second: the judge's rows on the new
    results) and the failure flag.  A suspect fails only when judged SLOWER again (or its
    benchmark now fails); one missing from the re-measurement stays as first judged."""
    again = {r[0]: r for r in second}
    rows = []
    for r in first:
        name = r[0]
        if name not in suspects or name not in again:
            rows.append(r)
            continue
        r2 = again[name]
        s1 = "?" if r[3] is None else f"{r[3]:.2f}"
        s2 = "?" if r2[3] is None else f"{r2[3]:.2f}"
        if r2[5] in FAILING:
            rows.append(r2[:5] + (r2[5], f"{r2[6]}; CONFIRMED on re-measure: slowdown {s1}, then {s2}"))
        else:
            rows.append(r2[:5] + (f"same (not confirmed on re-measure: slowdown {s1}, then {s2})", r2[6]))
    return rows, any(r[5] in FAILING for r in rows)


def slowdown_of(v1, v2, better):
    """after/before for lower-is-better, before/after for higher (> 1: slower); None when
    a value at or below 0 leaves no ratio (those figures are judged on the absolute scale)."""
    if v1 == v2:
        return 1.0
    if better == "lower":
        return v2 / v1 if v1 > 0 and v2 > 0 else None
    return v1 / v2 if v1 > 0 and v2 > 0 else None


def judge(conf, machine, base, head, factor, targets_path, ignore=DEFAULT_IGNORE, noise=None, left_out=None):
    """Rows of (name, before, after, slowdown, better, verdict, note) and the overall failure flag.

    factor: None, or the explicit threshold of wall-clock figures without a believable band.
    left_out: {name: note} of the figures the gate did not measure (too_noisy_to_gate): each
    gets a row that says so, whatever older results of the two commits hold."""
    try:
        with open(os.path.join(conf.results_dir, "benchmarks.json")) as f:
            meta = json.load(f)
    except OSError:
        raise SystemExit("GATE FAILED: asv produced no results (see the asv output above: "
                         "an environment or build failure?)") from None
    noise = noise or {}
    declared = directions(targets_path)
    ceiling_of = ceilings(targets_path, meta)
    r1, r2 = load(conf, machine, base), load(conf, machine, head)
    if not r1 or not r2:
        raise SystemExit(f"no results for {'base' if not r1 else 'head'} commit on machine {machine}")
    rows, bad = [], False
    left_out = left_out or {}
    for name in sorted(set(r1) | set(r2) | set(left_out)):
        if name in left_out:
            rows.append(left_out_row(name, left_out[name]))
            continue
        v1, ss1, key = r1.get(name, (None, None, None))
        v2, ss2, key2 = r2.get(name, (None, None, None))
        key = key or key2
        m = meta.get(key, {})
        better = better_of(key, m, declared)
        kind, thr, band, note = rule_for(name, key, m, noise, factor)
        ceiling = ceiling_of.get(name) if is_track(key, m) and better == "lower" else None
        if kind == "wall" and ceiling is not None:
            note += f", and above its target <= {ceiling:g}"
        slowdown, verdict = None, "same"
        measured1 = name in r1 and v1 is not None and not isnan(v1)
        if name not in r1:
            verdict = "new"
            if v2 is None:  # a benchmark the change adds, failing
                verdict, bad = "NEWLY FAILING", True
        elif name not in r2:
            verdict = "removed"
        elif v2 is None and v1 is not None:  # measured or skipped before, fails now
            verdict, bad = "NEWLY FAILING", True
        elif isnan(v2) and measured1:  # measured before, skipped now: a lost figure
            verdict, bad = "NEWLY SKIPPED", True
        elif v1 is None and v2 is not None:
            verdict = "fixed"
        elif v1 is None and v2 is None:
            verdict = "failed on both"
        elif isnan(v1) and isnan(v2):
            verdict = "skipped on both"
        elif v1 is None or v2 is None or isnan(v1) or isnan(v2):
            verdict = "newly measured" if (v2 is not None and not isnan(v2)) else "skipped (failed before)"
        else:
            slowdown = slowdown_of(v1, v2, better)
            went_worse = (v2 > v1) if better == "lower" else (v2 < v1)
            if kind == "absolute":
                worse_by = (v2 - v1) if better == "lower" else (v1 - v2)
                worse, improved = worse_by >= thr, -worse_by >= thr
            elif slowdown is None:  # 0 or a sign change on a ratio scale: a change beyond any band
                worse, improved = (went_worse, not went_worse) if kind != "not gated" else (False, False)
            elif kind == "cost":
                worse, improved = slowdown >= thr, slowdown <= 1 / thr
            elif kind == "wall":
                if better == "lower":
                    worse = _is_result_better(v1, v2, ss1, ss2, thr)
                    improved = _is_result_better(v2, v1, ss2, ss1, thr)
                else:
                    worse = _is_result_better(v2, v1, ss2, ss1, thr)
                    improved = _is_result_better(v1, v2, ss1, ss2, thr)
            else:  # not gated
                worse = improved = False
            if kind == "not gated":
                verdict = note
            elif worse and ignore and re.search(ignore, name):
                verdict = "slower (ignored: not our code)"
            elif worse and kind == "wall" and ceiling is not None and v2 <= ceiling:
                verdict = f"slower beyond its band, meets its target <= {ceiling:g}: not failed"
            elif worse:
                verdict, bad = "SLOWER", True
            elif improved:
                verdict = "faster"
            elif kind == "wall" and slowdown is not None and (slowdown > thr or slowdown < 1 / thr):
                verdict = "same (not significant)"
            elif slowdown != 1.0:
                verdict = "same (inside its band: noise)"
        rows.append((name, v1, v2, slowdown, better, verdict, note))
    return rows, bad


def fmt(v):
    if v is None:
        return "failed"
    if isnan(v):
        return "skipped"
    return f"{v:.4g}"


def print_table(rows, factor):
    print("\nGate (each figure in its own direction, with its own threshold from the noise file; "
          "slowdown > 1 is slower; " + ("wall clocks without a believable band: not gated)" if factor is None else
                                       f"--factor {factor:g} where no believable band was measured):"))
    width = max((len(r[0]) for r in rows), default=10)
    print(f"{'benchmark':<{width}}  {'before':>10}  {'after':>10}  {'slowdown':>8}  better  verdict  [rule]")
    for name, v1, v2, slowdown, better, verdict, note in rows:
        s = "" if slowdown is None else f"{slowdown:.4f}" if abs(slowdown - 1) < 0.05 else f"{slowdown:.2f}"
        print(f"{name:<{width}}  {fmt(v1):>10}  {fmt(v2):>10}  {s:>8}  {better:<6}  {verdict}  [{note}]")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="main", help="branch or commit; its merge base with HEAD is compared")
    ap.add_argument("--head", default="HEAD")
    ap.add_argument("--factor", type=float, default=None,
                    help="gate wall-clock figures that have no band in the noise file, or one from fewer "
                         f"than {MIN_BAND_VALUES} values, at this factor (default: show them, not gated)")
    ap.add_argument("--bench", default="", help="regex: only these benchmarks (asv -b)")
    ap.add_argument("--quick", action="store_true", help="one sample each (statistics then use only the band)")
    ap.add_argument("--all", action="store_true",
                    help="also measure the figures the noise file shows too noisy to gate (by default "
                         "they are listed, not measured)")
    ap.add_argument("--rounds", type=int, default=0,
                    help="asv rounds per commit (-a rounds=N): more samples for time_ benchmarks; "
                         "a track_ is then measured N times and asv keeps only the last value")
    ap.add_argument("--config", default="asv.conf.json")
    ap.add_argument("--targets", default="benchmarks/targets.json")
    ap.add_argument("--noise", default="benchmarks/noise.json", help="same-code spreads (make noise)")
    ap.add_argument("--no-run", action="store_true", help="judge existing results only")
    ap.add_argument("--no-explain", action="store_true", help="do not profile failing cost figures")
    ap.add_argument("--no-confirm", action="store_true",
                    help="fail wall-clock suspects as first measured (no re-measurement)")
    ap.add_argument("--ignore", default=DEFAULT_IGNORE,
                    help="regex of benchmarks shown but never failed on (default: the peers' own rates)")
    return ap.parse_args(argv)


def commits(base_ref, head_ref):
    """(base, head): HEAD's merge base with BASE, or HEAD's parent when HEAD is on BASE."""
    head = git("rev-parse", head_ref)
    base = git("merge-base", base_ref, head)
    if base == head:
        base = git("rev-parse", f"{head}^")
        print(f"HEAD is on {base_ref}: comparing it with its parent")
    print(f"base {git('log', '-1', '--format=%h %s', base)}\nhead {git('log', '-1', '--format=%h %s', head)}")
    return base, head


def run_both(args, base, head, skip=None):
    """asv continuous on both commits, without the figures in `skip`; then asv's own table,
    which it skips when a benchmark failed."""
    if not args.no_run:
        cont = ["continuous", "--factor", str(args.factor or ASV_FACTOR), "--show-stderr", "--split", *MACHINE_ARGS]
        selection = selection_regex(args.bench, skip or {})
        if selection:
            cont += ["--bench", selection]
        if args.quick:
            cont.append("--quick")
        if args.rounds:
            cont += ["--attribute", f"rounds={args.rounds}"]
        rc = asv(*cont, base, head)
        if rc not in (0, 1, 2):
            raise SystemExit(f"asv continuous failed (exit {rc})")
        # rc 1: asv's own verdict (direction-blind) or an error; 2: a benchmark failed,
        # in which case asv did not print the table.  Either way: print it and judge below.
    print("\nasv compare (asv's view: one factor for all, a rise is always 'worse', also for rates):",
          flush=True)
    asv("compare", "--factor", str(args.factor or ASV_FACTOR), "--split", "--machine", MACHINE, base, head)


def suspects_regex(names):
    """asv -b regex selecting exactly these figures (asv matches a parametrised benchmark
    as `name(param, ...)`, so only the suspect parameter combinations run)."""
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def remeasure(args, base, head, names):
    """Measure just `names` again on both commits, interleaved round by round
    (asv run --interleave-rounds over a hash file of the two): asv replaces their
    results, the others stay."""
    print(f"\nRe-measuring {len(names)} suspect(s) on both commits, interleaved, before judging them: "
          + ", ".join(names), flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".hashes", delete=False) as f:
        f.write(f"{base}\n{head}\n")
    try:
        cmd = ["run", "--show-stderr", *MACHINE_ARGS, "--bench", suspects_regex(names)]
        cmd += ["--quick"] if args.quick else ["--interleave-rounds", "--attribute", f"rounds={CONFIRM_ROUNDS}"]
        t0 = time.monotonic()
        rc = asv(*cmd, f"HASHFILE:{f.name}")
        print(f"re-measure took {minutes(time.monotonic() - t0)}", flush=True)
    finally:
        os.unlink(f.name)
    if rc not in (0, 2):
        print(f"asv run (re-measure) exited {rc}: the suspects keep their first verdict", flush=True)
        return False
    return True


def confirm_suspects(rows, bad, rejudge, remeasure_them):
    """The gate's second look: re-measure the wall-clock suspects (remeasure_them(names) ->
    measured or not), judge again (rejudge() -> rows, bad) and keep a suspect failing only
    if the new measurement is slower too.  Too many suspects, or a failed re-measurement,
    leave the first verdicts standing (failing): the gate never passes what it has not
    looked at twice."""
    suspects = suspects_of(rows)
    if not suspects:
        return rows, bad
    if len(suspects) > MAX_SUSPECTS:
        print(f"\n{len(suspects)} wall-clock figures judged slower, more than {MAX_SUSPECTS}: not re-measured "
              "(a whole second run); they fail as measured. To look again at some: make compare BENCH=regex",
              flush=True)
        return rows, bad
    if not remeasure_them(suspects):
        return rows, bad
    second, _ = rejudge()
    return confirm(rows, second, suspects)


def commit_seconds(conf, machine, commit, since_ms):
    """Seconds asv spent on one commit in this run: the durations it recorded for the
    benchmarks it started after since_ms (a JS timestamp), plus the commit's build and
    setup_cache steps. Both commits' rounds interleave, so a span of start times would
    overlap; this is the time each one cost."""
    total, counted = 0.0, False
    for res in iter_results_for_machine_and_hash(conf.results_dir, machine, commit):
        for key, seconds in res.duration.items():
            if key.startswith("<"):  # <build>, <setup_cache ...>
                total += seconds or 0
            elif (res.started_at.get(key) or 0) >= since_ms:
                total += seconds or 0
                counted = True
    return total if counted else None


def minutes(seconds):
    return "n/a" if seconds is None else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def print_times(conf, base, head, t_start, since_ms):
    """The gate's wall time and each commit's share (for the closing note of a change)."""
    wall = time.monotonic() - t_start
    per = {c: commit_seconds(conf, MACHINE, c, since_ms) for c in (base, head)}
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nmake compare wall time {minutes(wall)} (load average now {load})")
    print(f"per commit (asv's recorded durations: build, setup_cache, benchmarks): "
          f"base {minutes(per[base])}, head {minutes(per[head])}")


def skip_reason(name, pg_unmeasured):
    """Why a figure was skipped on both commits, as far as the gate can tell."""
    if pg_unmeasured and pg_server.is_pg_figure(name):
        return f"PostgreSQL not measured: {pg_unmeasured}"
    if name.startswith(COST_PREFIX) and not shutil.which("valgrind"):
        return "valgrind is not installed (apt-get install valgrind)"
    return ("asv stores no reason: its setup raised NotImplementedError (a feature, peer or "
            "server missing on this machine or commit)")


def print_skipped_on_both(rows, pg_unmeasured):
    """The figures neither commit measured: the gate has not looked at them."""
    both = [r[0] for r in rows if r[5] == "skipped on both"]
    failed = [r[0] for r in rows if r[5] == "failed on both"]
    if failed:
        print(f"\nFailed on both commits ({len(failed)}, not judged: see asv's output above): {', '.join(failed)}")
    if pg_unmeasured:
        pg = [n for n in both if pg_server.is_pg_figure(n)]
        print(f"\nPostgreSQL figures NOT MEASURED on either commit ({len(pg)} figures): {pg_unmeasured}. "
              "The gate has not looked at them (install PostgreSQL's server binaries to measure them).")
    if not both:
        return
    print(f"\nSkipped on both commits ({len(both)}, not judged):")
    for name in both:
        print(f"  {name}: {skip_reason(name, pg_unmeasured)}")


def load_note(gate_load, noise_load):
    """The verdict's word on load: the gate's highest 1-minute load average against the one
    its bands were measured at; the warning when the gate ran busier."""
    if gate_load is None:
        return ""
    if noise_load is None:
        return f" Load: the gate saw a 1-minute load average up to {gate_load:.1f}; the noise file records none for its bands."
    if gate_load > noise_load:
        return (f" BUSIER THAN ITS BANDS: the gate saw a 1-minute load average up to {gate_load:.1f}, its bands were "
                f"measured at up to {noise_load:.1f}: wall-clock verdicts rest on bands from a quieter machine "
                "(re-run when it is quieter, or `make noise` under this load).")
    return f" Load: the gate saw a 1-minute load average up to {gate_load:.1f}, its bands were measured at up to {noise_load:.1f}."


def print_verdict(rows, bad, pg_unmeasured=None, load=""):
    """The summary under the table; the names of the figures that failed the gate.
    load: load_note()'s sentence, appended to the verdict line."""
    slower = [r for r in rows if r[5] == "SLOWER"]
    failing = [r[0] for r in rows if r[5] == "NEWLY FAILING"]
    skipped = [r[0] for r in rows if r[5] == "NEWLY SKIPPED"]
    not_gated = [r[0] for r in rows if r[5].startswith("not gated")]
    if not_gated:
        kinds = {}
        for r in rows:
            if r[5].startswith("not gated"):
                why = re.sub(r"\s*\(.*|: band from \d+ values.*", "", r[5][len("not gated: "):])
                why = "band from too few values" if r[5].startswith("not gated: band from") else why
                kinds[why] = kinds.get(why, 0) + 1
        print(f"\n{len(not_gated)} figure(s) shown but NOT GATED (judged by nobody): "
              + ", ".join(f"{n} {why}" for why, n in sorted(kinds.items())) + ".")
    unmeasured = ""
    if pg_unmeasured:
        n = sum(1 for r in rows if r[5] == "skipped on both" and pg_server.is_pg_figure(r[0]))
        unmeasured = f" ({n} PostgreSQL figures were NOT MEASURED: no server, see above)"
    if not bad:
        print("\nGATE PASSED: no figure slower beyond its own threshold, none newly failing or skipped"
              + (unmeasured or ".") + load)
        return
    print(f"\nGATE FAILED: {len(slower)} slower, {len(failing)} newly failing, {len(skipped)} newly skipped"
          + (unmeasured or ".") + load)
    for r in slower:
        s = "" if r[3] is None else f" (slowdown {r[3]:.4f})"
        print(f"  slower: {r[0]}{s}  [{r[6]}]")
    for n in failing:
        print(f"  newly failing: {n}")
    for n in skipped:
        print(f"  newly skipped: {n} (measured on the base, skipped or n/a on HEAD)")


def main(argv=None):
    t_start, since_ms = time.monotonic(), int(time.time() * 1000)
    args = parse_args(argv)
    conf = Config.load(args.config)
    base, head = commits(args.base, args.head)
    noise_doc = read_noise_file(args.noise)
    noise = noise_doc.get("benchmarks", {})
    print(f"noise file {args.noise}: {len(noise)} figures with a measured spread"
          if noise else f"noise file {args.noise} missing: no wall-clock figure has a band"
          + ("" if args.factor is None else f" (each gets FACTOR={args.factor:g})"))
    ensure_machine()
    # Figures too noisy here to gate are not measured (unless --all): listed, with their band.
    left_out = {} if args.all or args.no_run else too_noisy_to_gate(noise)
    if args.bench:
        left_out = {n: note for n, note in left_out.items() if re.search(args.bench, n)}
    if left_out:
        print(f"not measured by the gate: {len(left_out)} figure(s) whose same-code band here is too wide to "
              "gate (shown below as not gated; ALL=1 measures them too)", flush=True)

    if nothing_left_to_measure(args.bench, noise, left_out):
        # nothing to run: asv would build both commits to measure nothing
        rows = [left_out_row(name, note) for name, note in sorted(left_out.items())]
        print_table(rows, args.factor)
        print(f"\nNOTHING MEASURED: every figure BENCH={args.bench} selects is too noisy here to gate "
              "(ALL=1 measures them, shown not gated).")
        print_verdict(rows, False)
        return 0

    def rejudge():
        return judge(conf, MACHINE, base, head, args.factor, args.targets, args.ignore, noise, left_out)

    # the PostgreSQL figures' servers, started here and always stopped (tools/pg_server.py),
    # kept up through the re-measurement of suspects; the load sampled all along
    with (contextlib.nullcontext() if args.no_run else pg_server.bench_servers()) as pg, LoadSampler() as seen:
        run_both(args, base, head, left_out)
        rows, bad = rejudge()
        if not args.no_run and not args.no_confirm:
            rows, bad = confirm_suspects(rows, bad, rejudge, lambda names: remeasure(args, base, head, names))
    print_table(rows, args.factor)
    print_skipped_on_both(rows, pg.unmeasured if pg else None)
    cost = [r[0] for r in rows if r[5] == "SLOWER" and r[6].startswith("cost")]
    if cost and not args.no_explain:
        explain.explain(cost, base, head)
    if not args.no_run:
        print_times(conf, base, head, t_start, since_ms)
    print_verdict(rows, bad, pg.unmeasured if pg else None,
                  load_note(None if args.no_run else seen.max, bands_load(noise_doc)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
