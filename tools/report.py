"""Write the benchmark report: .asv/report.md and .asv/report.json.

For every headline figure in benchmarks/targets.json: the target, the value
measured on the newest benchmarked commit of the branch, the value on the
previous benchmarked commit and the change, pass or fail.  Then prismq_queue's
ratio to each peer and to the hand-written sqlite3 floor, and the regressions
that asv's step detection finds in the history (both the list `asv publish`
wrote to regressions.json and, per headline figure, asv.step_detect run in the
figure's own direction: asv itself takes every rise as a regression, which is
wrong for tasks/s).

targets.json is a JSON list of objects:
  {"name": "<asv benchmark name>", "params": {"<param>": "<value as asv stores it>"},
   "label": "...", "target": 9000, "better": "higher" | "lower", "unit": "tasks/s"}
Entries with "kind": "peer_ratio" are listed under peers; their benchmark
returns the ratio itself, or the entry names "peer": {"name", "params"} and the
ratio is computed as this value / that value (for "better": "lower", that / this).
"target" may be omitted or null (shown, never failed).

benchmarks/rates.json maps a time_ benchmark to the number of tasks one call
processes ({"throughput.Enqueue.time_enqueue": 2000, ...}; the benchmark module
declares the same number as the function's `tasks_per_call`, which asv's
benchmarks.json does not keep).  Such a benchmark is reported as tasks/s
(tasks_per_call / seconds, higher is better); one missing from the file stays in
seconds.

The regression section runs step detection over every benchmark and parameter
combination in the history, each in its own direction, and puts next to each step
the figure's same-code band from benchmarks/noise.json: a step inside the band is
labelled noise.

Runs with the Python that has asv installed (make bench uses .venv).
"""
import argparse
import datetime
import itertools
import json
import math
import os
import platform
import sys

from asv import step_detect
from asv.config import Config
from asv.results import iter_results_for_machine

from .commands import git
from .compare import (ABS_GROWTH_MIN, ABS_UNITS, COST_SPREADS, MIN_BAND_VALUES,  # the gate's rules
                      band_values, better_of, read_noise)

STEP_THRESHOLD = 0.05  # relative size below which a step of a wall-clock figure is not reported
QUICK_VERDICT = "outside its band, but from a quick run (one sample): not judged, measure it fully"
COST_STEP_THRESHOLD = 0.005  # cost figures are counted, not timed: 0.5% is already real
DEFAULT_RATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "benchmarks", "rates.json")


def read_rates(path):
    """{time_ benchmark: tasks per call} from benchmarks/rates.json; {} when absent."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items()
            if not k.startswith("_") and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}


def pick_machine(results_dir, wanted=None):
    machines = sorted(d for d in os.listdir(results_dir)
                      if os.path.isfile(os.path.join(results_dir, d, "machine.json")))
    wanted = wanted or os.environ.get("ASV_MACHINE")
    if wanted:
        return wanted
    if platform.node() in machines:
        return platform.node()
    if len(machines) == 1:
        return machines[0]
    raise SystemExit(f"several machines in {results_dir} ({machines}); pass --machine")


def fmt(value, unit=""):
    if value is None:
        return "n/a"
    if unit in ("seconds", "s") or unit is None:
        for scale, name in ((1, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns")):
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}"
        return f"{value:.3g} s"
    if abs(value) >= 1000:
        return f"{value:,.0f} {unit}".strip()
    return f"{value:.3g} {unit}".strip()


class History:
    """Results of one machine, by commit, in branch order (newest first)."""

    def __init__(self, conf, machine, branch, rates=None):
        self.rates = rates or {}
        self.order = git("rev-list", "--first-parent", branch, cwd=conf.repo_dir).split()
        self.by_commit = {}
        for res in iter_results_for_machine(conf.results_dir, machine):
            self.by_commit.setdefault(res.commit_hash, []).append(res)
        self.commits = [c for c in self.order if c in self.by_commit]  # newest first
        self.quick = {c for c in self.commits if ran_quick(self.by_commit[c])}

    def value(self, commit, name, params):
        """(value, stats) of benchmark `name` at the given params on `commit`, or None."""
        for res in self.by_commit.get(commit, []):
            try:
                values = res.get_result_value(name, res.get_result_params(name))
                combos = list(itertools.product(*res.get_result_params(name)))
            except KeyError:
                continue
            names = self.param_names.get(name)
            if names is None:
                continue
            want = tuple(str(params.get(p)) for p in names) if names else ()
            for combo, v in zip(combos, values):
                if tuple(combo) == want:
                    return v  # None: failed; NaN: skipped
        return None


    def has_params(self, commit, name, params):
        """True if `commit`'s results hold benchmark `name` at the given params (any value)."""
        names = self.param_names.get(name)
        want = tuple(str(params.get(p)) for p in names or ())
        for res in self.by_commit.get(commit, []):
            try:
                if want in set(itertools.product(*res.get_result_params(name))):
                    return True
            except KeyError:
                continue
        return False


def ran_quick(results):
    """True if a commit's results come from a quick run (`asv run --quick`, `make bench
    QUICK=1`): every time_ benchmark has a single sample (asv records repeat = 1). Its
    wall-clock values are one measurement each, rougher than the same-code bands, which
    come from full runs; the track_ figures measure one repeat instead of 3 then too."""
    repeats = []
    for res in results:
        for key in res.get_all_result_keys():
            for st in res.get_result_stats(key, res.get_result_params(key)) or []:
                if st and "repeat" in st:
                    repeats.append(st["repeat"])
    return bool(repeats) and all(r == 1 for r in repeats)


def load_param_names(results_dir):
    with open(os.path.join(results_dir, "benchmarks.json")) as f:
        data = json.load(f)
    return {k: v.get("param_names", []) for k, v in data.items() if isinstance(v, dict)}, data


def change(new, old):
    if new is None or old is None or old == 0:
        return None
    return new / old - 1


def passes(value, target, better):
    if value is None:
        return None
    if target is None:
        return None
    return value >= target if better == "higher" else value <= target


def series(hist, entry):
    """Values oldest -> newest over the benchmarked commits."""
    commits = list(reversed(hist.commits))
    return commits, [entry_value(hist, c, entry) for c in commits]


def isnan(v):
    return isinstance(v, float) and math.isnan(v)


def entry_state(hist, commit, entry):
    """'ok', 'skipped' (NaN in asv's results), 'failed' (None) or 'missing' (not run)."""
    for res in hist.by_commit.get(commit, []):
        if entry["name"] in res.get_all_result_keys():
            v = hist.value(commit, entry["name"], entry.get("params", {}))
            if v is None and not hist.has_params(commit, entry["name"], entry.get("params", {})):
                return "missing"  # stored, but not at these parameters: never run, not failed
            return "skipped" if isnan(v) else ("failed" if v is None else "ok")
    return "missing"


def entry_value(hist, commit, entry):
    v = hist.value(commit, entry["name"], entry.get("params", {}))
    if isnan(v):
        return None
    per_call = hist.rates.get(entry["name"])
    if per_call and v is not None:
        v = per_call / v if v > 0 else None  # seconds per call -> tasks/s
    peer = entry.get("peer")
    if peer and v is not None:
        pv = hist.value(commit, peer["name"], peer.get("params", {}))
        if pv in (None, 0) or isnan(pv) or v == 0:
            return None
        return v / pv if entry.get("better", "higher") == "higher" else pv / v
    return v


def entry_better(entry):
    # a ratio computed from two figures is always "ours over theirs, > 1 is better"
    return "higher" if entry.get("peer") else entry.get("better", "higher")


def steps_for(hist, entry, threshold=STEP_THRESHOLD):
    """Regressions of one figure by asv.step_detect, in the figure's direction."""
    commits, ys = series(hist, entry)
    higher = entry_better(entry) == "higher"
    # detect_regressions treats a rise as a regression: feed 1/value for "higher is better".
    y = [None if v is None else (1.0 / v if higher and v else v) for v in ys]
    if sum(v is not None for v in y) < 3:
        return []
    if any(v is not None and v <= 0 for v in y):
        return []  # step detection works on ratios: figures at or below 0 (RSS growth) have none
    steps = step_detect.detect_steps(y)
    latest, best, jumps = step_detect.detect_regressions(steps, threshold=threshold)
    out = []
    for before, after, v_before, v_after in jumps or []:
        conv = (lambda x: 1.0 / x) if higher else (lambda x: x)
        c_before = commits[before] if before is not None else None
        c_after = commits[after]
        # the two values either side of the step: one sample each from a quick run?
        sides = [c_after] + ([commits[after - 1]] if after else [])
        quick = any(c in hist.quick for c in sides)
        if c_before is not None:
            # one commit apart on the branch: name only the commit that made the step
            i_after = hist.order.index(c_after)
            if i_after + 1 < len(hist.order) and hist.order[i_after + 1] == c_before:
                c_before = None
        out.append({
            "label": entry.get("label") or entry["name"],
            "name": entry["name"], "params": entry.get("params", {}),
            "commit_before": c_before,
            "commit_after": c_after,
            "value_before": conv(v_before), "value_after": conv(v_after),
            "change": change(conv(v_after), conv(v_before)),
            "unit": entry.get("unit", ""), "better": entry_better(entry), "quick": quick,
        })
    return out


def absolute_floor(fig):
    """The worsening a figure that can be 0 or negative must show to count (as the gate
    judges it: tools/compare.py), or None for a figure judged as a ratio."""
    if fig["unit"] in ABS_UNITS:
        return ABS_UNITS[fig["unit"]]
    if "growth" in fig["name"].rsplit(".", 1)[-1]:
        return ABS_GROWTH_MIN
    return None


def absolute_steps_for(hist, fig, floor):
    """Steps of a figure that can be 0 (lost tasks, errors) or negative (RSS growth): a
    ratio means nothing there, so a step counts when its level worsens by `floor` or more
    in the figure's unit (0 -> 1 lost task does; 0.000 -> 0.004 MiB does not)."""
    commits, ys = series(hist, fig)
    points = [(c, v) for c, v in zip(commits, ys) if v is not None]
    if len(points) < 2:
        return []
    levels = step_detect.detect_steps([v for _, v in points])
    out = []
    for (_l0, r0, before, *_), (l1, _r1, after, *_) in zip(levels, levels[1:]):
        worse_by = (after - before) if entry_better(fig) == "lower" else (before - after)
        if worse_by >= floor:
            out.append({"label": fig["label"], "name": fig["name"], "params": fig.get("params", {}),
                        "commit_before": None if r0 == l1 else points[r0 - 1][0],
                        "commit_after": points[l1][0], "value_before": before, "value_after": after,
                        "change": change(after, before) if before else None,
                        "unit": fig.get("unit", ""), "better": entry_better(fig), "absolute": worse_by})
    return out


def display_name(name, combo):
    """asv's name for one parameter combination (as `asv compare` and noise.json write it)."""
    return f"{name}({', '.join(combo)})" if combo else name


def all_figures(bench_meta, declared, rates):
    """Every benchmark and parameter combination asv knows, as report entries."""
    for key, m in sorted(bench_meta.items()):
        if not isinstance(m, dict) or "name" not in m:
            continue
        names, params = m.get("param_names", []), m.get("params", [])
        for combo in (itertools.product(*params) if params else [()]):
            display = display_name(key, combo)
            yield {"name": key, "params": dict(zip(names, combo)), "label": display,
                   "display": display, "cost": m.get("unit") == "instructions",
                   "better": "higher" if key in rates else better_of(key, m, declared),
                   "unit": "tasks/s" if key in rates else (m.get("unit") or "")}


def band_label(step, band, n_values=MIN_BAND_VALUES, cost=False):
    """'noise' when a step is no larger than the figure's same-code band, else 'real'.
    A wall clock's band from fewer than MIN_BAND_VALUES values calls nothing noise (the
    gate does not believe it either); a cost figure's band is a count's spread, kept.
    A wall clock's step beside a quick run (one sample) is not judged real: the bands
    come from full runs; a count does not depend on how many samples were taken."""
    if band is None:
        return "no band measured"
    if n_values < MIN_BAND_VALUES and not cost:
        return f"band from {n_values} values: not judged (needs {MIN_BAND_VALUES})"
    b, a = step["value_before"], step["value_after"]
    if b and a and (a > 0) == (b > 0) and max(a / b, b / a) <= band:
        return "noise (inside its band)"
    return QUICK_VERDICT if step.get("quick") and not cost else "real"


def asv_regressions(html_dir, bench_meta=None, declared=None):
    path = os.path.join(html_dir, "regressions.json")
    index_path = os.path.join(html_dir, "index.json")
    if not (os.path.exists(path) and os.path.exists(index_path)):
        return None
    with open(path) as f:
        data = json.load(f)["regressions"]
    with open(index_path) as f:
        rev_to_hash = json.load(f)["revision_to_hash"]
    out = []
    for name, _graph, env_params, _idx, last, best, jumps in data:
        key = name.split("(", 1)[0]
        better = better_of(key, (bench_meta or {}).get(key, {}), declared or {})
        for rev1, rev2, v1, v2 in jumps:
            out.append({
                "benchmark": name, "env": env_params,
                "commit_before": rev_to_hash.get(str(rev1)) if rev1 is not None else None,
                "commit_after": rev_to_hash.get(str(rev2)),
                "value_before": v1, "value_after": v2, "change": change(v2, v1),
                "latest": last, "best": best, "better": better,
                "really": "regression" if better == "lower" else "improvement",
            })
    return out


def build(conf, machine, targets_path, rates_path=DEFAULT_RATES, noise_path=None):
    branch = conf.branches[0] if conf.branches else "main"
    param_names, bench_meta = load_param_names(conf.results_dir)
    rates = read_rates(rates_path)
    noise = read_noise(noise_path or os.path.join(conf.repo_dir, "benchmarks", "noise.json"))
    hist = History(conf, machine, branch, rates)
    hist.param_names = param_names
    if not hist.commits:
        raise SystemExit(f"no results for machine {machine} on {branch} in {conf.results_dir}")
    newest = hist.commits[0]
    with open(targets_path) as f:
        targets = json.load(f)

    def describe(commit):
        if commit is None:
            return None
        line = git("log", "-1", "--format=%H%x00%s%x00%cI", commit, cwd=conf.repo_dir).strip()
        h, subject, date = line.split("\x00")
        tags = git("tag", "--points-at", commit, cwd=conf.repo_dir).split()
        return {"hash": h, "subject": subject, "date": date, "tags": tags}

    headlines, peers, step_regs = [], [], []
    for entry in targets:
        name = entry["name"]
        unit = entry.get("unit") or ("tasks/s" if name in rates else bench_meta.get(name, {}).get("unit", ""))
        cur = entry_value(hist, newest, entry)
        prev_commit, prev = None, None
        for c in hist.commits[1:]:
            v = entry_value(hist, c, entry)
            if v is not None:
                prev_commit, prev = c, v
                break
        row = {
            "label": entry.get("label") or name, "name": name,
            "params": entry.get("params", {}), "unit": unit,
            "target": entry.get("target"), "better": entry_better(entry),
            "value": cur, "previous": prev, "previous_commit": prev_commit,
            "change": change(cur, prev),
            "pass": passes(cur, entry.get("target"), entry_better(entry)),
            "known": name in bench_meta,
            "state": entry_state(hist, newest, entry),
            "band": (noise.get(display_name(name, tuple(str(entry.get("params", {}).get(p))
                                                         for p in param_names.get(name, [])))) or {}).get("band"),
        }
        if entry.get("peer"):
            row["peer"] = entry["peer"]
        (peers if entry.get("kind") == "peer_ratio" else headlines).append(row)

    declared = {e["name"]: e["better"] for e in targets if "better" in e and not e.get("peer")}
    scanned, short_history = 0, []
    for fig in all_figures(bench_meta, declared, rates):
        entry = noise.get(fig["display"]) or {}
        band = entry.get("band")
        floor = absolute_floor(fig)
        # asv's step detection wants 3 points; a change of a count shows with 2
        if sum(v is not None for v in series(hist, fig)[1]) < (2 if floor is not None else 3):
            short_history.append(fig["display"])
            continue
        scanned += 1
        if floor is not None:
            threshold = max(floor, COST_SPREADS * (entry.get("abs_spread") or 0))
            for g in absolute_steps_for(hist, fig, floor):
                g["band"] = band
                g["verdict"] = ("real" if g["absolute"] >= threshold else
                                f"noise (inside {COST_SPREADS}x its same-code spread)")
                step_regs.append(g)
            continue
        for g in steps_for(hist, fig, COST_STEP_THRESHOLD if fig["cost"] else STEP_THRESHOLD):
            g["band"], g["verdict"] = band, band_label(g, band, band_values(entry), fig["cost"])
            step_regs.append(g)
    step_regs.sort(key=lambda g: (g["verdict"] != "real", -abs(g["change"] or 0)))

    return {
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine, "branch": branch,
        "newest_commit": describe(newest),
        "previous_commit": describe(hist.commits[1]) if len(hist.commits) > 1 else None,
        "benchmarked_commits": len(hist.commits),
        "quick_commits": [c for c in hist.commits if c in hist.quick],
        "headlines": headlines, "peers": peers,
        "regressions_step_detect": step_regs,
        "regressions_asv": asv_regressions(conf.html_dir, bench_meta, declared),
        "step_detect_scanned": scanned, "step_detect_short_history": short_history,
        "summary": {
            "pass": sum(1 for r in headlines + peers if r["pass"] is True),
            "fail": sum(1 for r in headlines + peers if r["pass"] is False),
            "no_value": sum(1 for r in headlines + peers if r["value"] is None),
        },
    }


def pct(x):
    return "n/a" if x is None else f"{x * 100:+.1f}%"


def status(row):
    if row["value"] is None:
        if not row["known"]:
            return "no value (unknown benchmark)"
        return {"skipped": "skipped", "failed": "FAILED",
                "missing": "not run"}.get(row.get("state"), "no value")
    return {True: "PASS", False: "FAIL", None: "—"}[row["pass"]]


def target_text(row):
    if row["target"] is None:
        return "—"
    return ("≥ " if row["better"] == "higher" else "≤ ") + fmt(row["target"], row["unit"])


def band_text(band):
    return "not measured" if band is None else f"{(band - 1) * 100:.2g}%" if band < 1.1 else f"{band:.2f}×"


def params_text(p):
    return ", ".join(f"{k}={v}" for k, v in p.items())


def label_of(row):
    """The entry's label; the benchmark name and params when it has none."""
    if row.get("label") and row["label"] != row["name"]:
        return row["label"]
    return row["name"] + (f" ({params_text(row['params'])})" if row["params"] else "")


def to_markdown(rep):
    def short(c):
        return c[:8] if c else "—"

    new, prev = rep["newest_commit"], rep["previous_commit"]
    lines = [
        "# Benchmark report", "",
        f"Machine `{rep['machine']}`, branch `{rep['branch']}`, {rep['benchmarked_commits']} "
        f"benchmarked commit(s). Generated {rep['generated']}.", "",
        f"- Newest: `{short(new['hash'])}` {new['subject']} ({new['date']})"
        + (f" [{', '.join(new['tags'])}]" if new["tags"] else ""),
    ]
    if prev:
        lines.append(f"- Previous benchmarked: `{short(prev['hash'])}` {prev['subject']} ({prev['date']})")
    s = rep["summary"]
    lines += ["", f"**{s['pass']} pass, {s['fail']} fail, {s['no_value']} without a value.**", "",
              "## Headline figures", "",
              "Same-code band: the spread of this figure over runs of the same code on this machine "
              "(benchmarks/noise.json, `make noise`); a change inside it is noise.", "",
              "| figure | target | newest | previous | change | same-code band | status |",
              "|---|---|---|---|---|---|---|"]
    for r in rep["headlines"]:
        label = label_of(r)
        lines.append(f"| {label} | {target_text(r)} | {fmt(r['value'], r['unit'])} | "
                     f"{fmt(r['previous'], r['unit'])} | {pct(r['change'])} | {band_text(r.get('band'))} | "
                     f"{status(r)} |")
    lines += ["", "## prismq_queue against its peers and the sqlite3 floor", "",
              "Ratio of prismq_queue's figure to the peer's (> 1: prismq_queue is better).", "",
              "| comparison | target | newest | previous | change | status |",
              "|---|---|---|---|---|---|"]
    for r in rep["peers"]:
        label = label_of(r)

        def v(x):
            return "n/a" if x is None else f"{x:.2f}×"

        t = "—" if r["target"] is None else ("≥ " if r["better"] == "higher" else "≤ ") + f"{r['target']}×"
        lines.append(f"| {label} | {t} | {v(r['value'])} | {v(r['previous'])} | "
                     f"{pct(r['change'])} | {status(r)} |")
    lines += ["", "## Regressions", "",
              f"Step detection (asv.step_detect) over the history of every benchmark, each in its own "
              f"direction (a drop of tasks/s is a regression, a rise of ms is one), steps of "
              f"{STEP_THRESHOLD:.0%} or more ({COST_STEP_THRESHOLD:.1%} for the cost figures, which are "
              f"counted, not timed; figures that can be 0, such as lost tasks, errors or RSS growth: a "
              f"worsening of 1 in their unit, 1 MiB of growth). Each step is set against the figure's "
              f"same-code band: inside it, it is noise." + (
                  f" {len(rep['quick_commits'])} of the {rep['benchmarked_commits']} commits were measured "
                  "by a quick run (one sample per benchmark, `QUICK=1`): a wall-clock step next to one of "
                  "them is shown, not judged (the bands come from full runs)."
                  if rep.get("quick_commits") else ""), "",
              f"Figures scanned: {rep.get('step_detect_scanned', 0)}, every one measured on enough "
              f"commits (3; 2 for counts)" + (f"; not scanned, measured on too few commits: "
                            f"{len(rep['step_detect_short_history'])} "
                            f"({', '.join(rep['step_detect_short_history'][:20])}"
                            f"{', ...' if len(rep['step_detect_short_history']) > 20 else ''})"
                            if rep.get("step_detect_short_history") else "") + ".", ""]
    if rep["regressions_step_detect"]:
        lines += ["| figure | introduced by | before | after | change | same-code band | verdict |",
                  "|---|---|---|---|---|---|---|"]
        for g in rep["regressions_step_detect"]:
            where = (f"`{short(g['commit_after'])}`" if g["commit_before"] is None else
                     f"`{short(g['commit_before'])}..{short(g['commit_after'])}`")
            label = label_of(g)
            lines.append(f"| {label} | {where} | {fmt(g['value_before'], g['unit'])} | "
                         f"{fmt(g['value_after'], g['unit'])} | {pct(g['change'])} | "
                         f"{band_text(g.get('band'))} | {g.get('verdict', '')} |")
    else:
        lines.append("None found" + (" (step detection needs at least 3 benchmarked commits)."
                                     if rep["benchmarked_commits"] < 3 else "."))
    lines += ["", "All benchmarks, as `asv publish` lists them (regressions.json). asv counts every "
              "rise as a regression; the last column says which way it really went (a rise of "
              "tasks/s, a ratio or an efficiency is an improvement):", ""]
    regs = rep["regressions_asv"]
    if regs is None:
        lines.append("regressions.json not found (run `asv publish`).")
    elif not regs:
        lines.append("None.")
    else:
        lines += ["| benchmark | introduced by | before | after | change | really |",
                  "|---|---|---|---|---|---|"]
        for g in regs:
            where = (f"`{short(g['commit_after'])}`" if g["commit_before"] is None else
                     f"`{short(g['commit_before'])}..{short(g['commit_after'])}`")
            lines.append(f"| {g['benchmark']} | {where} | {g['value_before']:.4g} | "
                         f"{g['value_after']:.4g} | {pct(g['change'])} | {g['really']} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="asv.conf.json")
    ap.add_argument("--targets", default="benchmarks/targets.json")
    ap.add_argument("--machine", default=None)
    ap.add_argument("--rates", default=DEFAULT_RATES, help="tasks per call of time_ benchmarks")
    ap.add_argument("--noise", default=None, help="same-code bands (default: benchmarks/noise.json)")
    ap.add_argument("--out", default=None, help="folder for report.md/.json (default: .asv)")
    ap.add_argument("--branch", default=None, help="the history's branch (default: asv.conf.json's first)")
    args = ap.parse_args(argv)
    conf = Config.load(args.config)
    if args.branch:
        conf.branches = [args.branch]
    conf.repo_dir = os.path.dirname(os.path.abspath(args.config))
    if not os.path.exists(args.targets):
        print(f"error: {args.targets} not found (headline figures and targets)", file=sys.stderr)
        return 1
    machine = pick_machine(conf.results_dir, args.machine)
    rep = build(conf, machine, args.targets, args.rates, args.noise)
    out = args.out or os.path.dirname(os.path.abspath(conf.results_dir))
    os.makedirs(out, exist_ok=True)
    md = to_markdown(rep)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(rep, f, indent=1, default=str)
    print(md)
    print(f"report written to {os.path.join(out, 'report.md')} and report.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
