"""`make bench`: benchmark history, offline dashboard, report.

1. makes sure asv knows this machine (`asv machine --yes` on first use);
2. benchmarks the commits of the branch that have no complete results on this
   machine yet: by default the newest 10 (COUNT=), or a range given as RANGE=
   (`A..B` of commits, `ALL`, `TAGS`; `NEW`, `EXISTING` and `HASHFILE:` go to asv as
   they are); QUICK=1 runs each benchmark once. A commit is complete once a full
   run (no QUICK=, no BENCH=) has measured it: results of quick, partial or
   `make compare` runs do not count, so a later full run measures such a commit
   again (the list of complete commits: .asv/complete.json, per machine);
3. `asv publish`, then makes the site self-contained (tools/offline_dashboard.py);
4. writes .asv/report.md and .asv/report.json (tools/report.py);
5. says where the dashboard is and how to open it.

Exit status: 0, or 2 if a benchmark failed on a benchmarked commit (the
dashboard and the report are written all the same), or 1 on an error.
Runs with the Python that has asv installed (make bench: .venv/bin/python -m tools.bench).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from . import offline_dashboard, report
from .commands import asv, git
from .machine import MACHINE, MACHINE_ARGS, ensure_machine
from .pg_server import bench_servers


def step(n, total, text):
    print(f"\n==> [{n}/{total}] {text}", flush=True)


def stored_hashes(results_dir):
    """Commits with a results file of this machine (complete or not)."""
    machine_dir = os.path.join(results_dir, MACHINE)
    done = set()
    if os.path.isdir(machine_dir):
        for fn in os.listdir(machine_dir):
            if fn.endswith(".json") and fn != "machine.json":
                try:
                    with open(os.path.join(machine_dir, fn)) as f:
                        done.add(json.load(f)["commit_hash"])
                except (OSError, ValueError, KeyError):
                    pass
    return done


def complete_path(results_dir):
    # beside asv's results directory, not in it: asv reads every .json file there
    return os.path.join(os.path.dirname(os.path.abspath(results_dir)), "complete.json")


def complete_hashes(results_dir):
    """Commits a full run measured on this machine (their stored results are not partial or quick)."""
    try:
        with open(complete_path(results_dir)) as f:
            return set(json.load(f).get(MACHINE, []))
    except (OSError, ValueError, AttributeError):
        return set()


def mark_complete(results_dir, hashes):
    """Record `hashes` as completely measured on this machine, once their results are stored."""
    stored = stored_hashes(results_dir)
    path = complete_path(results_dir)
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    known[MACHINE] = sorted(set(known.get(MACHINE, [])) | {h for h in hashes if h in stored})
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(known, f, indent=1)
    os.replace(path + ".tmp", path)


def to_measure(wanted, results_dir, full):
    """The commits of `wanted` a run must measure: a full run, those not measured completely."""
    done = complete_hashes(results_dir)
    if not full:  # a quick or partial pass: any stored result will do
        done |= stored_hashes(results_dir)
    return [h for h in wanted if h not in done]


def resolve(range_, branch):
    """The commits of a range, newest first; None for asv's own NEW, EXISTING and HASHFILE:."""
    if range_ in ("NEW", "EXISTING") or range_.startswith("HASHFILE:"):
        return None
    if range_ == "TAGS":
        # resolved here: asv hands tag names to --skip-existing-commits, which then skips nothing
        tags = git("tag", "--list").split()
        return list(dict.fromkeys(git("rev-list", "-n1", t).strip() for t in tags))
    if range_ == "ALL":
        return git("rev-list", "--first-parent", branch).split()
    if ".." in range_:
        return git("rev-list", "--first-parent", range_).split()
    return git("rev-list", "-n1", range_).split()


def run_benchmarks(args, branch, results_dir):
    """asv run over the chosen commits; True if a benchmark failed."""
    # benchmarks/_memo.py: one run id (a measurement shared by several benchmarks is made
    # once per run and commit) and whether this run is a quick one (asv tells no benchmark)
    os.environ["PRISMQ_BENCH_RUN"] = f"bench{os.getpid()}x{int(time.time())}"
    if args.quick:
        os.environ["PRISMQ_BENCH_QUICK"] = "1"
    else:
        os.environ.pop("PRISMQ_BENCH_QUICK", None)
    full = not (args.quick or args.bench)
    run_args = ["--show-stderr", *MACHINE_ARGS]
    if args.quick:
        run_args.append("--quick")
    if args.bench:
        run_args += ["--bench", args.bench]
    if args.no_run:
        print("skipped (--no-run)")
        return False
    wanted = resolve(args.range, branch) if args.range else \
        git("rev-list", "--first-parent", f"-n{args.count}", branch).split()
    if wanted is None:  # asv's own selection: it skips commits with any results itself
        print(f"range {args.range}: commits that already have results on {MACHINE} are skipped")
        rc = asv("run", args.range, "--skip-existing-commits", *run_args, check=False)
        if rc not in (0, 2):
            raise SystemExit(f"asv run failed (exit {rc})")
        return rc == 2
    todo = to_measure(wanted, results_dir, full)
    print(f"{args.range or f'newest {args.count} commits of {branch}'}: {len(todo)} to benchmark, "
          f"{len(wanted) - len(todo)} already measured on {MACHINE}"
          + ("" if full else " (a quick or partial run: any stored result counts)"))
    for h in todo:
        print("  " + git("log", "-1", "--format=%h %cs %s", h).strip())
    if not todo:
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as hf:
        hf.write("\n".join(todo) + "\n")
    try:
        rc = asv("run", f"HASHFILE:{hf.name}", *run_args, check=False)
    finally:
        os.unlink(hf.name)
    if rc not in (0, 2):
        raise SystemExit(f"asv run failed (exit {rc})")
    if full:
        mark_complete(results_dir, todo)
    return rc == 2


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--range", default="", help="asv range (default: newest COUNT commits of the branch)")
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="run each benchmark once (asv --quick)")
    ap.add_argument("--bench", default="", help="regex: only these benchmarks (asv -b)")
    ap.add_argument("--config", default="asv.conf.json")
    ap.add_argument("--targets", default="benchmarks/targets.json")
    ap.add_argument("--no-run", action="store_true", help="only publish and report")
    ap.add_argument("--vendor-cache", default=None,
                    help="where the dashboard's npm packages are kept (default: .asv/vendor-build)")
    return ap.parse_args(argv)


def branch_here(branch):
    """The configured branch when this clone has it, else the branch checked out.

    A clone of a worktree or of a fork can lack a local `main`; asv publish and the report
    then failed on `git rev-list main`. There the history, the dashboard and the report
    follow the checked-out branch instead, and say so.
    """
    try:
        git("rev-parse", "--verify", "-q", f"refs/heads/{branch}")
        return branch
    except subprocess.CalledProcessError:
        pass
    try:
        here = git("symbolic-ref", "-q", "--short", "HEAD")
    except subprocess.CalledProcessError:
        here = "HEAD"  # detached: the history is HEAD's first parents
    print(f"note: this clone has no branch {branch!r}: the history, dashboard and report follow {here!r}")
    return here


def publish_config(config_path, branch):
    """asv.conf.json with `branches` set to [branch], for asv publish, kept beside asv's
    other files in .asv/ (asv reads a config's relative paths from the config's own
    directory, so they are made absolute)."""
    with open(config_path) as f:
        conf = json.loads("".join(line for line in f if not line.lstrip().startswith("//")))
    conf["branches"] = [branch]
    root = os.path.dirname(os.path.abspath(config_path))
    for key in ("repo", "benchmark_dir", "env_dir", "results_dir", "html_dir"):
        if key in conf:
            conf[key] = os.path.normpath(os.path.join(root, conf[key]))
    path = os.path.join(".asv", f"publish-{branch.replace('/', '_')}.conf.json")
    os.makedirs(".asv", exist_ok=True)
    with open(path, "w") as f:
        json.dump(conf, f, indent=1)
    return path


def read_config(path):
    """(branch, results_dir, html_dir) of asv.conf.json."""
    with open(path) as f:
        # asv.conf.json allows // comments; only the few keys we need are read here
        text = "".join(line for line in f if not line.lstrip().startswith("//"))
    conf = json.loads(text)
    return ((conf.get("branches") or ["main"])[0], conf.get("results_dir", "results"),
            conf.get("html_dir", "html"))


def benchmark(args, branch, results_dir):
    """Step 2 with the throwaway PostgreSQL servers around it; True if a benchmark failed."""
    if args.no_run:
        return run_benchmarks(args, branch, results_dir)
    with bench_servers():
        return run_benchmarks(args, branch, results_dir)


def publish(args, html_dir, branch, configured):
    """Step 3: asv publish, then a dashboard that loads nothing from other hosts."""
    if branch == configured:
        asv("publish", check=True)
    else:
        asv("publish", "--config", publish_config(args.config, branch), check=True)
    cache = args.vendor_cache or os.path.join(os.path.dirname(html_dir) or ".", "vendor-build")
    if offline_dashboard.main(["--html", html_dir, "--cache", cache]) != 0:
        raise SystemExit("could not make the dashboard self-contained")


def say_where(html_dir, t_start):
    html = os.path.abspath(html_dir)
    print(f"Dashboard: {html}/index.html (self-contained, works offline)")
    print("Open it:   make preview   (asv preview; then browse http://127.0.0.1:8080)")
    print(f"       or: python3 -m http.server -d {html_dir} 8080  (browsers block the page's data from file://)")
    print(f"Report:    {os.path.abspath(os.path.dirname(html_dir))}/report.md and report.json")
    print(f"Total time {time.monotonic() - t_start:.0f} s")


def main(argv=None):
    args = parse_args(argv)
    configured, results_dir, html_dir = read_config(args.config)
    branch = branch_here(configured)
    t_start = time.monotonic()
    step(1, 5, "asv machine")
    ensure_machine()
    step(2, 5, "benchmarking")
    failed = benchmark(args, branch, results_dir)
    print(f"(elapsed {time.monotonic() - t_start:.0f} s)")
    step(3, 5, "asv publish + offline dashboard")
    publish(args, html_dir, branch, configured)
    step(4, 5, "report")
    if report.main(["--config", args.config, "--targets", args.targets, "--branch", branch]) != 0:
        raise SystemExit("report failed")
    step(5, 5, "done")
    say_where(html_dir, t_start)
    if failed:
        print("\nSOME BENCHMARKS FAILED on a benchmarked commit (see the asv output above; "
              "they show as n/a in the report).", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
