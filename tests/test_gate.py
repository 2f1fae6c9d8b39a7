"""The pull-request gate catches what it exists for.

In a throwaway clone of this repository (its committed HEAD): a commit that only
changes a comment must pass `make compare`, and a commit that slows down the
claim path (a sleep in Queue.claim) must fail it.  `make compare` runs
`asv continuous` on a small subset of the suite (GATE_BENCH: the claim+complete
operation, ~0.4 ms; the sleep makes it ~5.4 ms), with the factor the Makefile sets
for the whole suite and 4 interleaved rounds per commit.

Needs asv (make test installs it); takes a few minutes on a 2-core machine,
most of it building asv's benchmark environment once.
"""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("asv", reason="asv is not installed: run the tests with `make test`")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GATE_BENCH = os.environ.get("GATE_BENCH", r"operations\.ClaimComplete\.")
GIT = ["git", "-c", "user.name=gate", "-c", "user.email=gate@example.invalid"]

COMMENT_ONLY = "\n# A comment: this commit changes no code, the gate must let it through.\n"
SLOWDOWN = '''
# Deliberate slowdown of the claim path (tests/test_gate.py): the gate must stop it.
import time as _gate_time

_gate_original_claim = Queue.claim


async def _gate_slow_claim(self, *args, **kwargs):
    _gate_time.sleep(0.005)
    return await _gate_original_claim(self, *args, **kwargs)


Queue.claim = _gate_slow_claim
'''


def git(*args, cwd):
    return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def commit_append(clone, text, message):
    path = os.path.join(clone, "prismq_queue", "__init__.py")
    with open(path, "a") as f:
        f.write(text)
    git("commit", "-qam", message, cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


def make_compare(clone, base):
    # the Makefile's FACTOR, 4 interleaved rounds per commit: steadier on a busy machine
    cmd = ["make", "-C", clone, "compare", f"BASE={base}", f"BENCH={GATE_BENCH}", "ROUNDS=4",
           f"VENV={sys.prefix}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    out = res.stdout + res.stderr
    print(out[-6000:])
    return res.returncode, out


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not os.path.exists(os.path.join(ROOT, "prismq_queue", "__init__.py")):
        pytest.skip("no prismq_queue package to slow down")
    path = str(tmp_path_factory.mktemp("gate") / "repo")
    subprocess.run(["git", "clone", "-q", ROOT, path], check=True)
    if not os.path.exists(os.path.join(path, "asv.conf.json")) or \
            not os.path.exists(os.path.join(path, "benchmarks", "__init__.py")):
        pytest.skip("the committed HEAD has no asv suite yet (asv.conf.json, benchmarks/)")
    git("checkout", "-q", "-b", "gate-test", cwd=path)
    return path


def test_gate(clone):
    base = git("rev-parse", "HEAD", cwd=clone)

    commit_append(clone, COMMENT_ONLY, "comment only")
    rc, out = make_compare(clone, base)
    assert "Gate (each benchmark in its own direction" in out, "the comparison table was not printed"
    assert re.search(r"time_claim_complete", out), "the claim benchmark did not run"
    assert rc == 0, "a comment-only commit failed the gate"
    assert "GATE PASSED" in out

    commit_append(clone, SLOWDOWN, "slow down claim")
    rc, out = make_compare(clone, base)
    assert rc != 0, "the gate let a 5 ms sleep in Queue.claim through"
    assert "GATE FAILED" in out
    slower = re.findall(r"^  slower: (.*)$", out, re.M)
    assert any("time_claim_complete" in s for s in slower), slower


# ---- the direction of track_ benchmarks, on fabricated results (seconds, no build) ----
# asv counts every rise as "worse"; for tasks/s that is backwards. A tiny suite of
# track_ figures is recorded for four commits with `asv run --python=same
# --set-commit-hash`, and tools/compare.py judges pairs of them (--no-run).

TINY_SUITE = '''
class Figures:
    def track_rate(self):
        return {rate}
    track_rate.unit = "tasks/s"

    def track_latency(self):
        return {latency}
    track_latency.unit = "ms"
'''
# (rate in tasks/s: higher is better, latency in ms: lower is better)
HISTORY = [(1000.0, 1.0), (500.0, 1.0), (2000.0, 0.5), (2000.0, 2.0)]


@pytest.fixture(scope="module")
def tiny_history(tmp_path_factory):
    import json
    repo = tmp_path_factory.mktemp("tiny")
    conf = {"version": 1, "project": "tiny", "repo": ".", "branches": ["main"], "dvcs": "git",
            "environment_type": "virtualenv", "benchmark_dir": "benchmarks",
            "env_dir": ".asv/env", "results_dir": ".asv/results", "html_dir": ".asv/html"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "asv.conf.json").write_text(json.dumps(conf))
    (repo / ".gitignore").write_text("/.asv/\n")
    hashes = []
    for rate, latency in HISTORY:
        (repo / "benchmarks" / "tiny.py").write_text(TINY_SUITE.format(rate=rate, latency=latency))
        git("add", "-A", cwd=repo)
        git("commit", "-qm", f"rate {rate} latency {latency}", cwd=repo)
        h = git("rev-parse", "HEAD", cwd=repo)
        hashes.append(h)
        subprocess.run([sys.executable, "-m", "asv", "machine", "--yes"], cwd=repo, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "asv", "run", "--python=same", "--quick",
                        f"--set-commit-hash={h}"], cwd=repo, check=True, capture_output=True)
    return repo, hashes


def judge_pair(repo, base, head):
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compare.py"), "--no-run",
                          "--factor", "1.5", "--base", base, "--head", head],
                         cwd=repo, capture_output=True, text=True)
    rows = dict(re.findall(r"^(tiny\.Figures\.\w+)\s.*\s(SLOWER|faster|same)\s*$",
                           res.stdout, re.M))
    return res.returncode, rows, res.stdout + res.stderr


def test_gate_direction_of_track_benchmarks(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[0], h[1])  # tasks/s halved
    assert rows == {"tiny.Figures.track_rate": "SLOWER", "tiny.Figures.track_latency": "same"}, out
    assert rc == 1, out
    rc, rows, out = judge_pair(repo, h[1], h[2])  # tasks/s x4, latency halved: both better
    assert rows == {"tiny.Figures.track_rate": "faster", "tiny.Figures.track_latency": "faster"}, out
    assert rc == 0, out
    rc, rows, out = judge_pair(repo, h[2], h[3])  # latency x4
    assert rows == {"tiny.Figures.track_rate": "same", "tiny.Figures.track_latency": "SLOWER"}, out
    assert rc == 1, out


@pytest.mark.parametrize("unit, better", [
    ("tasks/s", "higher"), ("ratio", "higher"), ("fraction of ideal", "higher"),
    ("Jain index", "higher"), ("x 1-process rate", "higher"),
    ("ms", "lower"), ("MiB", "lower"), ("errors", "lower"), ("tasks", "lower"),
    ("fraction of claims", "lower"), ("% of a core", "lower"), ("us CPU/task", "lower"),
    ("seconds", "lower"), ("rounds", "lower"),
])
def test_direction_of_track_units(unit, better):
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    from compare import better_of
    assert better_of("family.Class.track_figure", {"type": "track", "unit": unit}, {}) == better
    # targets.json decides where it speaks; time_ benchmarks are always lower-is-better
    assert better_of("family.Class.track_figure", {"type": "track", "unit": unit},
                     {"family.Class.track_figure": "lower"}) == "lower"
    assert better_of("family.Class.time_call", {"type": "time", "unit": "seconds"},
                     {"family.Class.time_call": "higher"}) == "lower"
