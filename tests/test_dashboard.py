"""The published dashboard works offline in a real browser, and the report is right.

Builds a small benchmark history in a throwaway git repository (three commits of a
tiny benchmark suite, each run with `asv run --python=same --set-commit-hash`, so no
environment is built), then runs the `make bench` pipeline after the benchmarking
step (python -m tools.bench --no-run: asv publish, tools/offline_dashboard.py,
tools/report.py), serves the site on 127.0.0.1 and opens it in headless Chromium
through the DevTools protocol (tools/browser_check.py).

Needs asv (make test installs it) and Chromium (.ci/run installs it; elsewhere:
`apt-get install chromium`), and the npm registry for the dashboard's libraries
(downloaded once into .asv/vendor-build).
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools import browser_check  # noqa: E402

pytest.importorskip("asv", reason="asv is not installed: run the tests with `make test`")

# The track value of each commit: the third commit drops the rate by 40%.
RATES = [1000.0, 1010.0, 600.0]

SUITE = textwrap.dedent('''
    RATE = {rate}

    class Rates:
        unit = "tasks/s"

        def track_rate(self):
            return RATE
        track_rate.unit = "tasks/s"
        track_rate.pretty_name = "Rate of the tiny suite"

    class Ops:
        # 10 against 10,000,000 additions (~0.1 s): no stall of a loaded machine
        # can make the first one measure slower than the second.
        params = [[10, 10000000]]
        param_names = ["n"]

        def time_sum(self, n):
            sum(range(n))
''')

ASV_CONF = {
    "version": 1, "project": "dashdemo", "project_url": "https://example.invalid/",
    "repo": ".", "branches": ["main"], "dvcs": "git", "environment_type": "virtualenv",
    "benchmark_dir": "benchmarks", "env_dir": ".asv/env",
    "results_dir": ".asv/results", "html_dir": ".asv/html",
}

TARGETS = [
    {"name": "bench_tiny.Rates.track_rate", "params": {}, "label": "tiny rate",
     "target": 900, "better": "higher", "unit": "tasks/s"},
    {"name": "bench_tiny.Ops.time_sum", "params": {"n": "10"}, "label": "sum of 10",
     "target": 1.0, "better": "lower", "unit": "seconds"},
    {"kind": "peer_ratio", "name": "bench_tiny.Ops.time_sum", "params": {"n": "10"},
     "peer": {"name": "bench_tiny.Ops.time_sum", "params": {"n": "10000000"}},
     "label": "sum of 10 against sum of 10,000,000", "target": 1.0, "better": "lower"},
]


def run(cmd, cwd, **kw):
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res.stdout


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dashdemo")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    run(["git", "init", "-q", "-b", "main"], repo)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "asv.conf.json").write_text(json.dumps(ASV_CONF, indent=1))
    (repo / "benchmarks" / "targets.json").write_text(json.dumps(TARGETS, indent=1))
    (repo / ".gitignore").write_text("/.asv/\n")
    hashes = []
    for i, rate in enumerate(RATES):
        (repo / "benchmarks" / "bench_tiny.py").write_text(SUITE.format(rate=rate))
        run(["git", "add", "-A"], repo)
        run([*git, "commit", "-qm", f"commit {i}"], repo)
        if i == 1:
            run([*git, "tag", "v0.1.0"], repo)
        h = run(["git", "rev-parse", "HEAD"], repo).strip()
        hashes.append(h)
        run([sys.executable, "-m", "asv", "machine", "--yes"], repo)
        run([sys.executable, "-m", "asv", "run", "--python=same", "--quick",
             f"--set-commit-hash={h}"], repo)
    os.makedirs(os.path.join(ROOT, ".asv"), exist_ok=True)
    tools_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    out = run([sys.executable, "-m", "tools.bench", "--no-run",
               "--vendor-cache", os.path.join(ROOT, ".asv", "vendor-build")], repo, env=tools_env)
    return {"repo": repo, "hashes": hashes, "out": out}


def test_pages_load_libraries_locally(published):
    html = published["repo"] / ".asv" / "html"
    index = (html / "index.html").read_text()
    assert "https://" not in "".join(
        line for line in index.splitlines() if "<script" in line or "<link" in line)
    assert 'src="vendor/jquery-3.3.1/dist/jquery.min.js" integrity="sha384-' in index
    for lib in ["jquery-3.3.1", "flot-0.8.3", "flot-orderbars-1.0.0", "blueimp-md5-2.19.0",
                "bootstrap-3.1.1/dist/fonts"]:
        assert (html / "vendor" / lib).exists(), lib
    assert "self-contained" in published["out"]


def test_report(published):
    rep = json.loads((published["repo"] / ".asv" / "report.json").read_text())
    h = published["hashes"]
    assert rep["newest_commit"]["hash"] == h[2]
    assert rep["previous_commit"]["hash"] == h[1]
    assert rep["benchmarked_commits"] == 3
    rate = rep["headlines"][0]
    assert (rate["value"], rate["previous"]) == (600.0, 1010.0)
    assert rate["change"] == pytest.approx(600 / 1010 - 1)
    assert rate["pass"] is False  # 600 < target 900
    assert rep["headlines"][1]["pass"] is True and rep["headlines"][1]["value"] > 0
    ratio = rep["peers"][0]
    assert ratio["better"] == "higher" and ratio["value"] > 1  # sum(10) is faster than sum(10**7)
    # step detection in the figure's own direction: the drop of the rate at commit 3
    steps = [g for g in rep["regressions_step_detect"] if g["name"] == "bench_tiny.Rates.track_rate"]
    assert [(g["commit_after"], g["commit_before"]) for g in steps] == [(h[2], None)]
    md = (published["repo"] / ".asv" / "report.md").read_text()
    assert "| tiny rate | ≥ 900 tasks/s | 600 tasks/s | 1,010 tasks/s | -40.6% | not measured | FAIL |" in md


def test_dashboard_in_chromium(published):
    binary = browser_check.find_chromium()
    if not binary:
        pytest.skip(browser_check.INSTALL_HINT)
    shot = os.path.join(ROOT, ".asv", "dashboard-test.png")
    seen = browser_check.check_dashboard(
        str(published["repo"] / ".asv" / "html"), graph="bench_tiny.Rates.track_rate",
        screenshot=shot, binary=binary)
    assert browser_check.problems(
        seen, ["Rate of the tiny suite", "bench_tiny.Ops.time_sum"]) == []  # pretty_name or name
    assert seen["graph"]["series_points"][0] == 3  # one point per commit
    assert os.path.getsize(shot) > 10_000
    if shutil.which("file"):
        assert "PNG image" in subprocess.run(["file", shot], capture_output=True, text=True).stdout
