"""tools/bench.py: which commits `make bench` measures, and the run-scoped sharing it sets up.

A commit whose stored results came from a quick, partial or `make compare` run is
measured again by the next full run; a measurement killed at asv's timeout is
remembered by every later reader of the same run; and under a real `asv run` one
measurement read by two benchmarks is made once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench_tool():
    from tools import bench
    return bench


def _store_result(results_dir, machine, commit):
    d = os.path.join(results_dir, machine)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"{commit[:8]}-env.json"), "w") as f:
        json.dump({"commit_hash": commit, "results": {}}, f)


def test_a_quick_result_is_measured_again_by_a_full_run(tmp_path):
    bench = _bench_tool()
    results = str(tmp_path / ".asv" / "results")
    a, b = "a" * 40, "b" * 40
    _store_result(results, bench.MACHINE, a)  # what a QUICK=1, BENCH= or compare run leaves
    assert bench.to_measure([a, b], results, full=True) == [a, b]
    assert bench.to_measure([a, b], results, full=False) == [b]  # a quick pass takes what is there
    bench.mark_complete(results, [a, b])  # b has no results file: not complete
    assert bench.to_measure([a, b], results, full=True) == [b]
    assert not os.path.exists(os.path.join(results, "complete.json"))  # asv reads every .json there


def test_a_range_is_resolved_to_commits_without_tags():
    bench = _bench_tool()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        assert bench.resolve("HEAD~2..HEAD", "HEAD")[0] == head
        assert len(bench.resolve("HEAD~2..HEAD", "HEAD")) == 2
        assert bench.resolve("NEW", "HEAD") is None
    finally:
        os.chdir(cwd)


def _memo_env(tmp_path, run_id):
    env = dict(os.environ)
    env.update({"TMPDIR": str(tmp_path), "PRISMQ_BENCH_RUN": run_id, "PRISMQ_BENCH_SMOKE": "1",
                "PYTHONPATH": ROOT})
    env.pop("PRISMQ_BENCH_QUICK", None)
    return env


def test_a_measurement_killed_at_its_timeout_is_remembered(tmp_path):
    # The first reader is killed while measuring (as asv kills a benchmark at its timeout);
    # the next reader of the same run must fail at once instead of measuring again.
    env = _memo_env(tmp_path, "killed-run")
    first = subprocess.Popen([sys.executable, "-c", "import time; from benchmarks import _memo; "
                              "_memo.shared('slow', lambda: time.sleep(600))"], cwd=ROOT, env=env)
    memo = os.path.join(str(tmp_path), "prismq-bench-memo")
    for _ in range(600):
        if os.path.isdir(memo) and any(f.endswith(".started") for d in os.listdir(memo)
                                       for f in os.listdir(os.path.join(memo, d))):
            break
        subprocess.run(["sleep", "0.1"])
    first.kill()
    first.wait()
    second = subprocess.run([sys.executable, "-c", "from benchmarks import _memo; "
                             "_memo.shared('slow', lambda: print('MEASURED AGAIN'))"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode != 0
    assert "MEASURED AGAIN" not in second.stdout
    assert "killed" in second.stderr, second.stderr


def test_quick_comes_from_the_environment(tmp_path):
    env = _memo_env(tmp_path, "q")
    env["PRISMQ_BENCH_SMOKE"] = "0"
    code = "from benchmarks import _memo; print(_memo.repeats())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "3", out.stderr
    env["PRISMQ_BENCH_QUICK"] = "1"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "1", out.stderr


def test_one_measurement_is_shared_under_a_real_asv_run(tmp_path):
    pytest.importorskip("asv", reason="asv is not installed")
    env = _memo_env(tmp_path, "shared-run")
    env.setdefault("HOME", tempfile.gettempdir())
    env.pop("PYTHONPATH")
    subprocess.run([sys.executable, "-m", "asv", "machine", "--yes"], cwd=ROOT, env=env, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "asv", "run", "--python=same", "--quick", "--dry-run",
                          "--show-stderr", "--bench", r"^memory\.Growth\."],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "failed" not in text, text
    assert "track_rss_growth" in text and "track_python_growth" in text, text
    memo = os.path.join(str(tmp_path), "prismq-bench-memo")
    (run_dir,) = [d for d in os.listdir(memo) if d.startswith("shared-run")]
    files = sorted(os.listdir(os.path.join(memo, run_dir)))
    assert files == ["memory-growth.json", "memory-growth.started"], files  # measured once, read twice


def test_report_says_not_run_for_parameters_nothing_stored_matches():
    # A commit measured only at backend 'sqlite' (e.g. no PostgreSQL server that night):
    # the 'postgresql' headline was not run; it did not fail.
    from asv import results as asv_results
    from asv.runner import BenchmarkResult

    from tools import report
    res = asv_results.Results({"machine": "m"}, {}, "c" * 40, 0, "3.11", "env", {})
    bench = {"name": "throughput.Enqueue.track_enqueue", "params": [["'sqlite'"]],
             "param_names": ["backend"], "version": "1", "type": "track"}
    res.add_result(bench, BenchmarkResult(result=[5.0], samples=[None], number=[None], errcode=0,
                                          stderr="", profile=None))
    hist = report.History.__new__(report.History)
    hist.by_commit = {"c" * 40: [res]}
    hist.param_names = {bench["name"]: ["backend"]}
    entry = {"name": bench["name"], "params": {"backend": "'postgresql'"}}
    assert report.entry_state(hist, "c" * 40, entry) == "missing"
    assert report.entry_state(hist, "c" * 40, dict(entry, params={"backend": "'sqlite'"})) == "ok"


def test_a_clone_without_main_follows_its_own_branch(tmp_path, monkeypatch):
    """A fresh clone of a worktree has no local main: asv publish and the report failed on
    `git rev-list main`; the history, dashboard and report now follow the checked-out branch."""
    bench = _bench_tool()
    from asv.config import Config
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q", "-b", "work", str(tmp_path)], check=True)
    (tmp_path / "asv.conf.json").write_text('{\n  // a comment, as ours has\n  "version": 1, "repo": ".",\n'
                                            '  "branches": ["main"], "results_dir": ".asv/results",\n'
                                            '  "html_dir": ".asv/html"\n}\n')
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "c"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    assert bench.branch_here("main") == "work"
    conf = Config.load(bench.publish_config("asv.conf.json", "work"))
    assert conf.branches == ["work"]
    assert conf.repo == str(tmp_path) and conf.html_dir == str(tmp_path / ".asv" / "html")
    subprocess.run([*git, "branch", "main"], cwd=tmp_path, check=True)
    assert bench.branch_here("main") == "main"
