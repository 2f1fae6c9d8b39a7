"""The pull-request gate catches what it exists for, and nothing else.

1. In a throwaway clone of this repository (its committed HEAD), on the cost family
   (benchmarks/cost.py, instructions counted by cachegrind; only the claim + complete
   figure, PRISMQ_BENCH_COST_OPS, to keep the test short): a commit that only changes a
   comment passes `make compare`; a commit that adds ~2.5% instructions to the claim path
   fails it on the cost figure, and the gate names the function that does the extra work.
   asv's environment for the clone is kept in .asv/gate-test-env of this checkout, so only
   the first run builds it.  Skipped without valgrind.
2. On fabricated results (a tiny asv suite recorded for a few commits with `asv run
   --python=same --set-commit-hash`, judged by tools/compare.py --no-run against a
   fabricated noise file): each figure's own threshold - direction, band, cost +1%,
   absolute thresholds for figures that can be 0, "not gated: too noisy here", a figure
   skipped on HEAD fails; and tools/report.py on the same history (tasks/s from
   benchmarks/rates.json, step detection in each figure's direction, bands).
3. tools/noise.py's spread of figures that are 0 or cross 0.
"""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("asv", reason="asv is not installed: run the tests with `make test`")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the tools package run from another directory (python -m tools.compare)
TOOLS_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
GIT = ["git", "-c", "user.name=gate", "-c", "user.email=gate@example.invalid"]
COST_BENCH = r"^cost\.SQLite\."
# claim + complete: single calls on the loop's thread, whose count no longer depends on
# timing (turns by call count, no teardown in a count): 0.08% apart in two runs
COST_OP = "claim_complete"
COST_FIGURE = "cost.SQLite.track_instructions('claim_complete_per_task')"

COMMENT_ONLY = "\n# A comment: this commit changes no code, the gate must let it through.\n"
# ~2.5% more instructions per claim + complete (~10.6k of ~425k: the wrapper ~5.5k, 20
# additions ~265 each; 45 additions measured +4.1%)
SLOWDOWN = '''
# Deliberate extra work on the claim path (tests/test_gate.py): the gate must stop it.
_gate_original_claim = Queue.claim


async def _gate_slow_claim(self, *args, **kwargs):
    extra = 0
    for i in range(20):
        extra += i
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
    git("commit", "-qm", message, "prismq_queue/__init__.py", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone)


def make_compare(clone, base, bench=COST_BENCH, **env_vars):
    env = dict(os.environ, PRISMQ_BENCH_COST_OPS=COST_OP)
    for var in ("PRISMQ_BENCH_PG", "PRISMQ_BENCH_PG_DURABLE"):  # the gate starts its own servers
        env.pop(var, None)
    env.update(env_vars)
    cmd = ["make", "-C", clone, "compare", f"BASE={base}", f"BENCH={bench}", f"VENV={sys.prefix}"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    out = res.stdout + res.stderr
    print(out[-8000:])
    return res.returncode, out


def throwaway_clone(tmp_path_factory):
    """A clone of this repository's committed HEAD on branch gate-test, with asv's
    environment kept outside it (built once, reused by later runs)."""
    path = str(tmp_path_factory.mktemp("gate") / "repo")
    subprocess.run(["git", "clone", "-q", ROOT, path], check=True)
    if not os.path.exists(os.path.join(path, "benchmarks", "cost.py")):
        pytest.skip("the committed HEAD has no cost family yet (benchmarks/cost.py)")
    git("checkout", "-q", "-b", "gate-test", cwd=path)
    # asv's environment outside the throwaway clone: built once, reused by later runs
    conf_path = os.path.join(path, "asv.conf.json")
    with open(conf_path) as f:
        conf = f.read()
    env_dir = os.path.join(ROOT, ".asv", "gate-test-env")
    conf = re.sub(r'"env_dir":\s*"[^"]*"', f'"env_dir": {json.dumps(env_dir)}', conf)
    with open(conf_path, "w") as f:
        f.write(conf)
    return path


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if not shutil.which("valgrind"):
        pytest.skip("valgrind is not installed (apt-get install valgrind): no cost figures to gate on")
    return throwaway_clone(tmp_path_factory)


def test_gate_on_cost_figures(clone):
    base = git("rev-parse", "HEAD", cwd=clone)

    commit_append(clone, COMMENT_ONLY, "comment only")
    rc, out = make_compare(clone, base)
    assert "Gate (each figure in its own direction" in out, "the comparison table was not printed"
    row = [line for line in out.splitlines() if line.startswith(COST_FIGURE)]
    assert row and "cost: fails at +1" in row[0], "the claim cost figure was not judged as a cost figure"
    assert rc == 0, "a comment-only commit failed the gate"
    assert "GATE PASSED" in out

    commit_append(clone, SLOWDOWN, "extra work in claim")
    rc, out = make_compare(clone, base)
    assert rc != 0, "the gate let ~2.5% more instructions per claimed task through"
    assert "GATE FAILED" in out
    slower = re.findall(r"^  slower: (\S+)", out, re.M)
    assert COST_FIGURE in slower, slower
    why = out.split(f"Why {COST_FIGURE} changed", 1)
    assert len(why) == 2, "no explanation of the failing cost figure"
    assert "prismq_queue/__init__.py:_gate_slow_claim" in why[1], why[1][:3000]


# ---- PostgreSQL in the gate: its own throwaway servers, always stopped ----

# one PostgreSQL figure, at its small size (PRISMQ_BENCH_SMOKE), that the gate measures by
# default: its band in benchmarks/noise.json is narrow enough to gate (time_enqueue_1k's is
# not since the noise run of 2026-12-01, so the gate leaves that one out)
PG_BENCH = r"^throughput\.DurablePostgres\.time_drain_20k$"
PG_FIGURE = "throughput.DurablePostgres.time_drain_20k"


def need_postgres():
    from tools.pg_server import find_bindir
    if find_bindir() is None:
        pytest.skip("PostgreSQL server binaries are not installed: the gate cannot measure PostgreSQL here")


def test_compare_measures_a_postgresql_figure_on_both_commits(tmp_path_factory):
    need_postgres()
    from tools import compare
    with open(os.path.join(ROOT, "benchmarks", "noise.json")) as f:
        noise = json.load(f)["benchmarks"]
    assert PG_FIGURE not in compare.too_noisy_to_gate(noise), (
        f"{PG_FIGURE} is too noisy here to gate now: pick a PostgreSQL figure the gate measures")
    repo = throwaway_clone(tmp_path_factory)
    base = git("rev-parse", "HEAD", cwd=repo)
    commit_append(repo, COMMENT_ONLY, "comment only")
    rc, out = make_compare(repo, base, bench=PG_BENCH, PRISMQ_BENCH_SMOKE="1")
    row = [line.split() for line in out.splitlines() if line.startswith(PG_FIGURE + " ")]
    assert row, f"{PG_FIGURE} is not in the gate's table"
    before, after = row[0][1], row[0][2]
    assert before not in ("skipped", "failed") and after not in ("skipped", "failed"), row[0]
    assert float(before) > 0 and float(after) > 0, row[0]
    assert "NOT MEASURED" not in out
    assert "GATE" in out
    # the gate's own wall time and each commit's share, for a change's closing note
    assert re.search(r"^make compare wall time \d+m\d+\.\ds", out, re.M), out[-3000:]
    per = re.search(r"^per commit .*: base (\d+)m([\d.]+)s, head (\d+)m([\d.]+)s", out, re.M)
    assert per and all(float(per.group(i)) * 60 + float(per.group(i + 1)) > 0 for i in (1, 3)), out[-3000:]


def port_of(url):
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def accepts(port):
    import socket
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        return True
    except OSError:
        return False


def test_bench_servers_are_stopped_after_an_exception(monkeypatch):
    need_postgres()
    from tools.pg_server import BENCH_SERVERS, bench_servers
    for var, _ in BENCH_SERVERS:
        monkeypatch.delenv(var, raising=False)
    ports = []
    with pytest.raises(RuntimeError, match="boom"):
        with bench_servers(log=lambda _msg: None) as status:
            assert status.unmeasured is None, status.missing
            ports = [port_of(os.environ[var]) for var, _ in BENCH_SERVERS]
            assert all(accepts(p) for p in ports)
            raise RuntimeError("boom")
    assert len(ports) == 2 and not any(accepts(p) for p in ports), "a server outlived its run"
    assert not any(os.environ.get(var) for var, _ in BENCH_SERVERS)


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_bench_servers_are_stopped_on_ctrl_c_and_sigterm(sig):
    import signal
    need_postgres()
    # Ctrl-C as a terminal delivers it: a shell starts background jobs with SIGINT ignored,
    # and a child of such a job would never see it (once seen here: two servers left over)
    script = ("import os, signal, sys, time\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
              "from tools.pg_server import BENCH_SERVERS, bench_servers\n"
              "with bench_servers(log=lambda m: None):\n"
              "    print(' '.join(os.environ[v] for v, _ in BENCH_SERVERS), flush=True)\n"
              "    time.sleep(600)\n")
    env = {k: v for k, v in TOOLS_ENV.items() if not k.startswith("PRISMQ_BENCH_PG")}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        ports = [port_of(u) for u in proc.stdout.readline().split()]
        assert len(ports) == 2 and all(accepts(p) for p in ports)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=600)  # two `pg_ctl stop`s on a loaded machine
    finally:
        proc.kill()
    assert proc.returncode != 0, err
    assert not any(accepts(p) for p in ports), f"a server outlived {sig}"


def test_missing_postgresql_is_said_once_and_not_passed_silently(monkeypatch, capsys):
    from tools import compare
    from tools.pg_server import bench_servers
    monkeypatch.setenv("PRISMQ_BENCH_PG", "skip")
    monkeypatch.delenv("PRISMQ_BENCH_PG_DURABLE", raising=False)
    monkeypatch.setattr("tools.pg_server.find_bindir", lambda: None)  # no server binaries here
    said = []
    with bench_servers(log=said.append) as status:
        assert "PRISMQ_BENCH_PG" not in os.environ
    assert len(said) == 1 and "not be measured" in said[0], said
    assert "PRISMQ_BENCH_PG=skip" in status.unmeasured and "not found" in status.unmeasured
    nan = float("nan")
    rows = [("throughput.TimedDrain.time_drain_50k('postgresql')", nan, nan, None, "lower", "skipped on both", ""),
            ("strategies.Claim.time_claim('x')", nan, nan, None, "lower", "skipped on both", ""),
            ("throughput.TimedDrain.time_drain_50k('sqlite')", 1.0, 1.0, 1.0, "lower", "same", "")]
    compare.print_skipped_on_both(rows, status.unmeasured)
    compare.print_verdict(rows, False, status.unmeasured)
    out = capsys.readouterr().out
    assert "PostgreSQL figures NOT MEASURED on either commit (1 figures)" in out, out
    assert "Skipped on both commits (2, not judged)" in out
    assert "strategies.Claim.time_claim('x'): asv stores no reason" in out
    assert "GATE PASSED" in out and "1 PostgreSQL figures were NOT MEASURED" in out, out


def test_pg_figures_are_recognised():
    from tools.pg_server import is_pg_figure
    for name in ["throughput.TimedDrain.time_drain_50k('postgresql')", "throughput.DurablePostgres.time_drain_20k",
                 "cost.PostgreSQLClient.track_instructions('postgresql', 'client_drain_per_task')",
                 "single_calls.IdleWorkersPg.track_ratio('postgresql')",
                 "peers.PeerRates.track_rate('pgqueuer', 'enqueue')",
                 "peers.PeerRates.track_rate('prismq_queue_pg', 'enqueue')"]:
        assert is_pg_figure(name), name
    for name in ["throughput.TimedDrain.time_drain_50k('sqlite')", "peers.PeerRates.track_rate('huey', 'enqueue')",
                 "cost.SQLite.track_instructions('drain_per_task')"]:
        assert not is_pg_figure(name), name


# ---- thresholds on fabricated results (seconds, no build) ----

TINY_SUITE = '''
import time

FIG = {figs!r}


class Figures:
    def track_rate(self):
        return FIG["rate"]
    track_rate.unit = "tasks/s"

    def track_latency(self):
        return FIG["latency"]
    track_latency.unit = "ms"

    def track_cost(self):
        return FIG["cost"]
    track_cost.unit = "instructions"

    def track_lost_tasks(self):
        return FIG["lost"]
    track_lost_tasks.unit = "tasks"

    def track_rss_growth(self):
        return FIG["growth"]
    track_rss_growth.unit = "MiB"

    def track_wide(self):
        return FIG["wide"]
    track_wide.unit = "ms"

    def track_steady(self):
        return FIG["steady"]
    track_steady.unit = "ms"

    def track_few(self):
        return FIG["few"]
    track_few.unit = "ms"

    def track_unbanded(self):
        return FIG["unbanded"]
    track_unbanded.unit = "ms"


class Optional:
    def setup(self):
        if FIG["skip"]:
            raise NotImplementedError("this commit lacks the feature")

    def track_feature(self):
        return 1.0
    track_feature.unit = "ms"


class Batch:
    number = 1
    repeat = 2  # a full run's 2 samples: one sample would read as a quick run (tools/report.py)
    rounds = 1
    warmup_time = 0

    def time_batch(self):
        time.sleep(FIG["sleep"])
'''
# Batch sleeps a whole second (4 s from h4): on a loaded machine a sleep overruns by tens
# of milliseconds, which must stay inside its 10% floor (0.05 s once read 0.085 s here).
BASE = {"rate": 1000.0, "latency": 1.0, "cost": 100000, "lost": 0, "growth": 0.0, "wide": 1.0,
        "steady": 1.0, "few": 1.0, "unbanded": 1.0, "skip": False, "sleep": 1.0}
# h2's moves of the wall-clock figures stay for the rest of the history
MOVED = {"rate": 500.0, "steady": 1.5, "few": 2.0, "unbanded": 2.0}
HISTORY = [
    {},                                                         # h0
    {"rate": 1020.0, "cost": 100500, "growth": 0.004,           # h1: all inside thresholds
     "steady": 1.15},                                           # (a track_: band 1.10 squared)
    {**MOVED},                                                  # h2: rate halved (beyond its band)
    {**MOVED, "cost": 101600},                                  # h3: +1.09% instructions
    {**MOVED, "cost": 101600, "lost": 1, "wide": 1.6,
     "sleep": 4.0},                                             # h4: 0 -> 1 lost task
    {**MOVED, "cost": 101600, "lost": 1, "wide": 1.6, "skip": True,
     "sleep": 4.0},                                             # h5: skipped on HEAD
]


def same_code(lo, hi, n=6):
    """n same-code values from lo to hi (make noise writes them beside each band)."""
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


NOISE = {"benchmarks": {
    "tiny.Figures.track_rate": {"band": 1.03, "abs_spread": 30, "values": same_code(1000, 1030)},
    "tiny.Figures.track_latency": {"band": 1.2, "abs_spread": 0.2, "values": same_code(1.0, 1.2)},
    "tiny.Figures.track_cost": {"band": 1.0004, "abs_spread": 40, "values": same_code(100000, 100040, 4)},
    "tiny.Figures.track_lost_tasks": {"band": 1.0, "abs_spread": 0, "values": [0, 0, 0, 0]},
    "tiny.Figures.track_rss_growth": {"band": None, "abs_spread": 0.01, "values": same_code(0.0, 0.01, 4)},
    "tiny.Figures.track_wide": {"band": 1.8, "abs_spread": 0.8, "values": same_code(1.0, 1.8)},
    "tiny.Figures.track_steady": {"band": 1.1, "abs_spread": 0.1, "values": same_code(1.0, 1.1)},
    # a band from 4 values (2 rounds of make noise): too few to gate on
    "tiny.Figures.track_few": {"band": 1.05, "abs_spread": 0.05, "values": [1.0, 1.05, float("nan"), 1.02, 1.01]},
    # tiny.Figures.track_unbanded: not in the noise file (a new benchmark)
    "tiny.Batch.time_batch": {"band": 1.05, "abs_spread": 0.001, "values": same_code(1.0, 1.05)},
}}


@pytest.fixture(scope="module")
def tiny_history(tmp_path_factory):
    repo = tmp_path_factory.mktemp("tiny")
    conf = {"version": 1, "project": "tiny", "repo": ".", "branches": ["main"], "dvcs": "git",
            "environment_type": "virtualenv", "benchmark_dir": "benchmarks",
            "env_dir": ".asv/env", "results_dir": ".asv/results", "html_dir": ".asv/html"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "asv.conf.json").write_text(json.dumps(conf))
    (repo / ".gitignore").write_text("/.asv/\n")
    (repo / "noise.json").write_text(json.dumps(NOISE))
    (repo / "rates.json").write_text(json.dumps({"tiny.Batch.time_batch": 400}))
    (repo / "targets.json").write_text(json.dumps([
        {"name": "tiny.Batch.time_batch", "params": {}, "label": "batch of 400", "target": 200,
         "better": "higher", "unit": "tasks/s"},
        {"name": "tiny.Figures.track_cost", "params": {}, "label": "cost", "target": None,
         "better": "lower", "unit": "instructions"}]))
    hashes = []
    for i, change in enumerate(HISTORY):
        figs = {**BASE, **change}
        (repo / "benchmarks" / "tiny.py").write_text(TINY_SUITE.format(figs=figs))
        git("add", "-A", cwd=repo)
        git("commit", "-qm", f"h{i}", cwd=repo)
        h = git("rev-parse", "HEAD", cwd=repo)
        hashes.append(h)
        subprocess.run([sys.executable, "-m", "asv", "machine", "--yes"], cwd=repo, check=True,
                       capture_output=True)
        subprocess.run([sys.executable, "-m", "asv", "run", "--python=same",
                        f"--set-commit-hash={h}"], cwd=repo, check=True, capture_output=True)
    return repo, hashes


def judge_pair(repo, base, head, *extra):
    res = subprocess.run([sys.executable, "-m", "tools.compare", "--no-run", *extra,
                          "--base", base, "--head", head, "--noise", str(repo / "noise.json")],
                         cwd=repo, capture_output=True, text=True, env=TOOLS_ENV)
    rows = {}
    for m in re.finditer(r"^(tiny\.\w+\.\w+)\s.*?\s(higher|lower)\s+(.*?)  \[", res.stdout, re.M):
        rows[m.group(1)] = m.group(3)
    return res.returncode, rows, res.stdout + res.stderr


def test_thresholds_inside_every_band_pass(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[0], h[1])
    assert rows["tiny.Figures.track_rate"].startswith("same"), out   # +2%: inside the band
    assert rows["tiny.Figures.track_cost"].startswith("same"), out   # +0.5% instructions: under 1%
    assert rows["tiny.Figures.track_rss_growth"].startswith("same"), out  # 0.000 -> 0.004 MiB
    # a track_ has no samples to back its band: 1.15x is inside 1.10 squared
    assert rows["tiny.Figures.track_steady"].startswith("same"), out
    assert rc == 0, out


def test_wall_clock_figure_beyond_its_band_fails(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[1], h[2])
    assert rows["tiny.Figures.track_rate"] == "SLOWER", out  # tasks/s halved: a drop of a rate
    assert rows["tiny.Figures.track_steady"] == "SLOWER", out  # 1.30x: beyond 1.10 squared
    assert rc == 1, out


def test_band_from_too_few_values_or_none_is_shown_not_gated(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[1], h[2])
    # both doubled, and neither is gated: labelled, not silently passed, not gated at a factor
    assert rows["tiny.Figures.track_few"] == "not gated: band from 4 values, needs 6", out
    assert rows["tiny.Figures.track_unbanded"].startswith("not gated: no band measured"), out
    assert "1 band from too few values" in out and "2 no band measured" in out, out
    # an explicit FACTOR gates them, and says so
    rc, rows, out = judge_pair(repo, h[1], h[2], "--factor", "1.5")
    assert rows["tiny.Figures.track_few"] == "SLOWER", out
    assert rows["tiny.Figures.track_unbanded"] == "SLOWER", out
    assert "FACTOR=1.5 given" in out


def test_cost_figure_fails_at_one_percent(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[2], h[3])
    assert rows["tiny.Figures.track_cost"] == "SLOWER", out
    assert "cost: fails at +1.0%" in out, out  # 3x its spread (0.04%) is under 1%: 1% rules
    assert rc == 1, out


def test_zero_to_one_lost_task_fails(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[3], h[4])
    assert rows["tiny.Figures.track_lost_tasks"] == "SLOWER", out
    assert rows["tiny.Figures.track_cost"].startswith("same"), out
    assert rc == 1, out


def test_newly_skipped_fails_and_noisy_figure_is_shown_not_gated(tiny_history):
    repo, h = tiny_history
    rc, rows, out = judge_pair(repo, h[4], h[5])
    assert rows["tiny.Optional.track_feature"] == "NEWLY SKIPPED", out
    assert rows["tiny.Figures.track_wide"].startswith("not gated: too noisy here"), out
    assert "newly skipped: tiny.Optional.track_feature" in out
    assert rc == 1, out


def write_report(repo, out):
    """tools/report.py over a tiny history's results, with its targets, rates and bands."""
    res = subprocess.run([sys.executable, "-m", "tools.report",
                          "--targets", str(repo / "targets.json"), "--rates", str(repo / "rates.json"),
                          "--noise", str(repo / "noise.json"), "--out", str(out)],
                         cwd=repo, capture_output=True, text=True, env=TOOLS_ENV)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "report.json").read_text())


def test_report_rates_steps_and_bands(tiny_history, tmp_path):
    repo, h = tiny_history
    rep = write_report(repo, tmp_path)
    batch = next(r for r in rep["headlines"] if r["name"] == "tiny.Batch.time_batch")
    assert batch["unit"] == "tasks/s" and 50 < batch["value"] < 101, batch  # 400 / (4 s + the machine's lag)
    steps = {(g["name"], g["commit_after"]): g for g in rep["regressions_step_detect"]}
    # the drop of a rate is found (asv's own regressions only list rises) ...
    rate = steps.get(("tiny.Figures.track_rate", h[2]))
    assert rate and rate["verdict"] == "real" and rate["change"] < -0.4, rep["regressions_step_detect"]
    # ... and of a time_ benchmark reported as tasks/s, in the direction of a rate
    batch_step = steps.get(("tiny.Batch.time_batch", h[4]))
    assert batch_step and batch_step["better"] == "higher" and batch_step["change"] < 0, steps
    # +1.1% instructions: a cost step (above 0.5%), outside its band
    cost = steps.get(("tiny.Figures.track_cost", h[3])) or steps.get(("tiny.Figures.track_cost", h[1]))
    assert cost and cost["verdict"] == "real", steps
    # a step no larger than the figure's band is labelled noise
    wide = steps.get(("tiny.Figures.track_wide", h[4]))
    assert wide and wide["verdict"].startswith("noise"), steps
    # ... but not by a band from too few values (the gate does not believe it either)
    few = steps.get(("tiny.Figures.track_few", h[2]))
    assert few and few["verdict"].startswith("band from 4 values: not judged"), steps
    # figures that can be 0 are stepped on an absolute scale: 0 -> 1 lost task is found,
    # 0.000 -> 0.004 MiB of RSS growth is not
    lost = steps.get(("tiny.Figures.track_lost_tasks", h[4]))
    assert lost and lost["verdict"] == "real" and lost["value_after"] == 1, steps
    assert not any(name == "tiny.Figures.track_rss_growth" for name, _ in steps), steps
    # every figure of the history went through step detection
    assert rep["step_detect_scanned"] == 11 and rep["step_detect_short_history"] == [], rep
    md = (tmp_path / "report.md").read_text()
    assert "same-code band" in md and "noise (inside its band)" in md
    assert "Figures scanned: 11," in md
    assert rep["quick_commits"] == [] and "quick run" not in md, rep["quick_commits"]


def test_report_does_not_judge_a_wall_clock_step_of_a_quick_run(tiny_history, tmp_path):
    # the same history, h2 (the rate halved) measured again by a quick run: one sample
    # per benchmark, rougher than the bands, so its wall-clock steps are shown, not judged;
    # a count (instructions, lost tasks) is judged whatever the number of samples
    repo, h = tiny_history
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True)
    git("checkout", "-q", h[2], cwd=copy)  # --python=same measures the working tree
    subprocess.run([sys.executable, "-m", "asv", "run", "--python=same", "--quick",
                    f"--set-commit-hash={h[2]}"], cwd=copy, check=True, capture_output=True)
    git("checkout", "-q", "main", cwd=copy)
    rep = write_report(copy, tmp_path)
    assert rep["quick_commits"] == [h[2]], rep["quick_commits"]
    steps = {(g["name"], g["commit_after"]): g for g in rep["regressions_step_detect"]}
    rate = steps.get(("tiny.Figures.track_rate", h[2]))
    assert rate and rate["verdict"].startswith("outside its band, but from a quick run"), steps
    cost = steps.get(("tiny.Figures.track_cost", h[3])) or steps.get(("tiny.Figures.track_cost", h[1]))
    assert cost and cost["verdict"] == "real", steps
    lost = steps.get(("tiny.Figures.track_lost_tasks", h[4]))
    assert lost and lost["verdict"] == "real", steps
    assert "1 of the 6 commits were measured by a quick run" in (tmp_path / "report.md").read_text()


# ---- rules that need no results ----

def test_default_ignore_judges_prismq_queue_on_both_engines():
    from tools.compare import DEFAULT_IGNORE
    assert re.search(DEFAULT_IGNORE, "peers.PeerRates.track_rate('huey', 'enqueue')")
    assert re.search(DEFAULT_IGNORE, "peers.PeerRates.track_rate('pgqueuer', 'claim_ack')")
    assert not re.search(DEFAULT_IGNORE, "peers.PeerRates.track_rate('prismq_queue', 'enqueue')")
    assert not re.search(DEFAULT_IGNORE, "peers.PeerRates.track_rate('prismq_queue_pg', 'enqueue')")


def test_noise_spread_of_figures_at_zero():
    from tools.noise import spread, summarize
    assert spread([0, 0, 0, 0]) == (1.0, 0)
    assert spread([0.0, 0.004, 0.001]) == (None, 0.004)  # no ratio at 0: absolute spread only
    assert spread([-0.5, 0.25]) == (None, 0.75)
    assert spread([2.0, 4.0, float("nan"), None]) == (2.0, 2.0)
    out = summarize({"a": [0, 0], "b": [0, 3], "c": [None, None]})
    assert out["a"]["band"] == 1.0 and out["b"]["band"] is None and "c" not in out


@pytest.mark.parametrize("unit, better", [
    ("tasks/s", "higher"), ("ratio", "higher"), ("fraction of ideal", "higher"),
    ("Jain index", "higher"), ("x 1-process rate", "higher"),
    ("ms", "lower"), ("MiB", "lower"), ("errors", "lower"), ("tasks", "lower"),
    ("fraction of claims", "lower"), ("% of a core", "lower"), ("us CPU/task", "lower"),
    ("seconds", "lower"), ("rounds", "lower"), ("instructions", "lower"),
])
def test_direction_of_track_units(unit, better):
    from tools.compare import better_of
    assert better_of("family.Class.track_figure", {"type": "track", "unit": unit}, {}) == better
    # targets.json decides where it speaks; time_ benchmarks are always lower-is-better
    assert better_of("family.Class.track_figure", {"type": "track", "unit": unit},
                     {"family.Class.track_figure": "lower"}) == "lower"
    assert better_of("family.Class.time_call", {"type": "time", "unit": "seconds"},
                     {"family.Class.time_call": "higher"}) == "lower"


def test_rates_file_agrees_with_the_benchmarks():
    """benchmarks/rates.json repeats each time_ benchmark's `tasks_per_call` (asv does not keep it)."""
    import importlib
    with open(os.path.join(ROOT, "benchmarks", "rates.json")) as f:
        rates = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
    sys.path.insert(0, ROOT)
    for name, per_call in rates.items():
        module, *attrs = name.split(".")
        obj = importlib.import_module(f"benchmarks.{module}")
        for a in attrs:
            obj = getattr(obj, a)
        assert attrs[-1].startswith("time_"), name
        assert getattr(obj, "tasks_per_call", None) == per_call, (name, per_call)


# ---- a suspect is measured again before it fails (fabricated results, real asv) ----

CONFIRM_SUITE = '''
FIG = {figs!r}


class Figures:
    def track_flaky(self):
        return FIG["flaky"]
    track_flaky.unit = "ms"

    def track_real(self):
        return FIG["real"]
    track_real.unit = "ms"

    def track_claim_ratio(self):
        return FIG["ratio"]
    track_claim_ratio.unit = "ratio"
'''
CONFIRM_NOISE = {"benchmarks": {
    f"tiny.Figures.{name}": {"band": 1.1, "abs_spread": 0.1, "values": same_code(1.0, 1.1)}
    for name in ("track_flaky", "track_real", "track_claim_ratio")}}
# the ratio's target is a ceiling, as ClaimDepthRatio's (<= 1.5) in benchmarks/targets.json
CONFIRM_TARGETS = [{"name": "tiny.Figures.track_claim_ratio", "params": {}, "label": "claim ratio",
                    "target": 1.5, "better": "lower", "unit": "ratio"}]


def record(repo, commit, figs, bench=None):
    """asv results for `commit` as if measured: the suite returns figs (--python=same)."""
    (repo / "benchmarks" / "tiny.py").write_text(CONFIRM_SUITE.format(figs=figs))
    cmd = [sys.executable, "-m", "asv", "run", "--python=same", "--quick", f"--set-commit-hash={commit}"]
    subprocess.run(cmd + (["--bench", bench] if bench else []), cwd=repo, check=True, capture_output=True)


@pytest.fixture
def confirm_repo(tmp_path, monkeypatch):
    """Two commits, base and head; head's first measurement: flaky and real 2x slower,
    the ceiling ratio 0.80 -> 1.34 (a same-code commit's move once seen on ClaimDepthRatio)."""
    repo = tmp_path / "confirm"
    repo.mkdir()
    conf = {"version": 1, "project": "tiny", "repo": ".", "branches": ["main"], "dvcs": "git",
            "environment_type": "virtualenv", "benchmark_dir": "benchmarks",
            "env_dir": ".asv/env", "results_dir": ".asv/results", "html_dir": ".asv/html"}
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    (repo / "benchmarks").mkdir()
    (repo / "benchmarks" / "__init__.py").write_text("")
    (repo / "asv.conf.json").write_text(json.dumps(conf))
    (repo / ".gitignore").write_text("/.asv/\n")
    (repo / "targets.json").write_text(json.dumps(CONFIRM_TARGETS))
    hashes = []
    for i in range(2):
        (repo / f"file{i}").write_text(str(i))
        git("add", "-A", cwd=repo)
        git("commit", "-qm", f"c{i}", cwd=repo)
        hashes.append(git("rev-parse", "HEAD", cwd=repo))
    subprocess.run([sys.executable, "-m", "asv", "machine", "--yes"], cwd=repo, check=True, capture_output=True)
    record(repo, hashes[0], {"flaky": 1.0, "real": 1.0, "ratio": 0.8})
    record(repo, hashes[1], {"flaky": 2.0, "real": 2.0, "ratio": 1.34})
    monkeypatch.chdir(repo)
    return repo, hashes


def gate_once(repo, base, head):
    from asv.config import Config

    from tools import compare
    conf = Config.load(str(repo / "asv.conf.json"))
    return lambda: compare.judge(conf, compare.MACHINE, base, head, None, str(repo / "targets.json"),
                                 noise=CONFIRM_NOISE["benchmarks"])


def verdicts(rows):
    return {r[0]: r[5] for r in rows}


def test_suspect_not_confirmed_passes_and_a_real_slowdown_still_fails(confirm_repo):
    from tools import compare
    repo, (base, head) = confirm_repo
    rejudge = gate_once(repo, base, head)
    rows, bad = rejudge()
    first = verdicts(rows)
    assert first["tiny.Figures.track_flaky"] == "SLOWER" and first["tiny.Figures.track_real"] == "SLOWER", first
    assert bad
    asked = []

    def remeasure(names):  # asv measures the suspects again: the flaky one lands back at 1.02
        asked.append(sorted(names))
        record(repo, head, {"flaky": 1.02, "real": 2.0, "ratio": 1.34}, bench=compare.suspects_regex(names))
        return True

    rows, bad = compare.confirm_suspects(rows, bad, rejudge, remeasure)
    assert asked == [["tiny.Figures.track_flaky", "tiny.Figures.track_real"]], asked  # only the suspects
    after = {r[0]: r for r in rows}
    assert after["tiny.Figures.track_flaky"][5].startswith("same (not confirmed on re-measure: slowdown 2.00, then 1.02"), after
    assert after["tiny.Figures.track_real"][5] == "SLOWER", after  # a real slowdown is there again
    assert "CONFIRMED on re-measure: slowdown 2.00, then 2.00" in after["tiny.Figures.track_real"][6]
    assert bad, "a confirmed slowdown passed the gate"
    compare.print_verdict(rows, bad)


def test_only_unconfirmed_suspects_pass_the_gate(confirm_repo):
    from tools import compare
    repo, (base, head) = confirm_repo
    rejudge = gate_once(repo, base, head)
    rows, bad = rejudge()

    def remeasure(names):  # both were the machine's noise this time
        record(repo, head, {"flaky": 1.05, "real": 0.98, "ratio": 1.34}, bench=compare.suspects_regex(names))
        return True

    rows, bad = compare.confirm_suspects(rows, bad, rejudge, remeasure)
    assert not bad, verdicts(rows)


def test_suspects_not_remeasured_keep_failing(confirm_repo, monkeypatch):
    from tools import compare
    repo, (base, head) = confirm_repo
    rejudge = gate_once(repo, base, head)
    rows, bad = rejudge()
    # too many suspects: no second run of them, the first verdict stands
    limit = compare.MAX_SUSPECTS
    monkeypatch.setattr(compare, "MAX_SUSPECTS", 1)
    called = []
    out, out_bad = compare.confirm_suspects(rows, bad, rejudge, lambda names: called.append(names) or True)
    assert not called and out_bad and verdicts(out)["tiny.Figures.track_flaky"] == "SLOWER"
    # a re-measurement that failed to run: likewise
    monkeypatch.setattr(compare, "MAX_SUSPECTS", limit)
    out, out_bad = compare.confirm_suspects(rows, bad, rejudge, lambda names: False)
    assert out_bad and verdicts(out)["tiny.Figures.track_real"] == "SLOWER"


def test_ceiling_target_judges_a_track_figure_as_well_as_its_band(confirm_repo):
    repo, (base, head) = confirm_repo
    rows, _ = gate_once(repo, base, head)()
    row = {r[0]: r for r in rows}["tiny.Figures.track_claim_ratio"]
    # 0.80 -> 1.34: beyond its band squared (1.21), still under its ceiling of 1.5
    assert row[5] == "slower beyond its band, meets its target <= 1.5: not failed", row
    assert "above its target <= 1.5" in row[6], row
    # above its ceiling and beyond its band: fails
    record(repo, head, {"flaky": 1.0, "real": 1.0, "ratio": 1.6})
    rows, bad = gate_once(repo, base, head)()
    assert verdicts(rows)["tiny.Figures.track_claim_ratio"] == "SLOWER" and bad, rows
    # above its ceiling but inside its band (already above before): noise, not a failure
    record(repo, base, {"flaky": 1.0, "real": 1.0, "ratio": 1.55})
    rows, bad = gate_once(repo, base, head)()
    assert verdicts(rows)["tiny.Figures.track_claim_ratio"].startswith("same"), rows
    assert not bad


def test_ceilings_read_from_targets():
    from tools.compare import ceilings
    path = os.path.join(ROOT, "benchmarks", "targets.json")
    meta = {"operations.ClaimDepthRatio.track_claim_ratio": {"param_names": []},
            "latency.EnqueueToHandler.track_to_start": {"param_names": ["backend", "scenario", "percentile"]}}
    got = ceilings(path, meta)
    assert got["operations.ClaimDepthRatio.track_claim_ratio"] == 1.5
    assert got["latency.EnqueueToHandler.track_to_start('sqlite', 'same-light', 'p99')"] == 1.0
    # floors (better higher) and counts (target 0) are no ceilings
    assert not any(n.startswith(("throughput.TimedDrain", "stress.")) for n in got), got


# ---- the gate's load against its bands' ----

def test_verdict_says_when_the_gate_ran_busier_than_its_bands(capsys):
    from tools import compare
    doc = {"runs": [{"date": "d1", "load_average_max": 3.2},
                    {"date": "d2", "load_average_before": [0.5, 1, 1], "load_average_after": [1.7, 1, 1]},
                    {"date": "d3", "load_average_max": 0.1},  # no figure comes from d3 any more
                    {"date": "d4", "load_average_max": 0.2}],  # only cost figures: not a wall-clock band's load
           "benchmarks": {"a": {"run": "d1"}, "b": {"run": "d2"},
                          "cost.SQLite.track_instructions('drain_per_task')": {"run": "d4"}}}
    assert compare.run_load(doc["runs"][1]) == 1.7  # an older file: before / after only
    assert compare.bands_load(doc) == 1.7  # the quietest run the bands come from
    busy = compare.load_note(4.5, compare.bands_load(doc))
    assert "BUSIER THAN ITS BANDS" in busy and "up to 4.5" in busy and "up to 1.7" in busy, busy
    calm = compare.load_note(1.2, 1.7)
    assert "BUSIER" not in calm and "up to 1.2" in calm
    compare.print_verdict([("x", 1.0, 1.0, 1.0, "lower", "same", "")], False, None, busy)
    out = capsys.readouterr().out
    assert re.search(r"^GATE PASSED: .*BUSIER THAN ITS BANDS", out, re.M), out


# ---- make noise's background load ----

def test_noise_bands_keep_each_values_condition():
    from tools.noise import summarize
    out = summarize({"f": [1.0, 1.1, 1.05, 2.0]}, {"f": ["quiet", "quiet", "load", "load"]})
    assert out["f"]["band"] == 2.0 and out["f"]["band_quiet"] == 1.1, out
    assert out["f"]["conditions"] == ["quiet", "quiet", "load", "load"]


def test_spinners_load_the_machine_and_stop():
    import time

    from tools.load import LoadSampler, Spinners
    with pytest.raises(ValueError):
        Spinners(1, 0)
    with LoadSampler(every=0.2) as seen, Spinners(2, 1.0) as spin:
        pids = [p.pid for p in spin._running]
        assert len(pids) == 2
        time.sleep(1.0)
        # each spinner burns CPU (utime + stime from /proc/<pid>/stat, in clock ticks)
        ticks = []
        for pid in pids:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks.append(int(fields[11]) + int(fields[12]))
        assert all(t > 0 for t in ticks), ticks
    assert len(seen.samples) >= 2 and seen.max is not None
    for pid in pids:  # stopped on exit, and reaped
        assert not os.path.exists(f"/proc/{pid}"), pid


def test_noise_refuses_impossible_load_settings_before_measuring(capsys):
    from tools import noise
    with pytest.raises(SystemExit, match="--load-rounds must be between 0 and --rounds"):
        noise.main(["--rounds", "2", "--load-rounds", "3"])
    with pytest.raises(SystemExit, match="duty in"):
        noise.main(["--load-duty", "0"])


# ---- figures too noisy to gate are listed, not measured ----

LEFT_OUT_NOISE = {
    "a.Wide.track_ms": {"band": 1.8, "abs_spread": 0.8, "values": same_code(1.0, 1.8), "unit": "ms", "type": "track"},
    "a.Steady.track_ms": {"band": 1.2, "abs_spread": 0.2, "values": same_code(1.0, 1.2), "unit": "ms", "type": "track"},
    # crosses 0 in a ratio unit: no band, too noisy
    "a.Cross.track_ms": {"band": None, "abs_spread": 2.0, "values": same_code(-1.0, 1.0), "unit": "ms",
                         "type": "track"},
    # counts are judged on an absolute scale, however wide their ratio
    "a.Lost.track_lost_tasks": {"band": 3.0, "abs_spread": 2, "values": [1, 3, 1, 2, 3, 1], "unit": "tasks",
                                "type": "track"},
    # instructions: always gated
    "cost.X.track_instructions('p')": {"band": 1.8, "abs_spread": 9, "values": same_code(10, 18),
                                       "unit": "instructions", "type": "track"},
    # a band from too few values is measured and shown, not left out
    "a.Few.time_s": {"band": 1.05, "abs_spread": 0.05, "values": [1.0, 1.05], "unit": "seconds", "type": "time"},
    # an entry from before units were recorded: its rule is unknown, so it is measured
    "a.Old.track_ms": {"band": 1.9, "abs_spread": 0.9, "values": same_code(1.0, 1.9)},
    "a.Param.track_ms('x', 1)": {"band": 2.0, "abs_spread": 1.0, "values": same_code(1.0, 2.0), "unit": "ms",
                                 "type": "track"},
}


def test_only_figures_too_noisy_to_gate_are_left_out():
    from tools import compare
    out = compare.too_noisy_to_gate(LEFT_OUT_NOISE)
    assert set(out) == {"a.Wide.track_ms", "a.Cross.track_ms", "a.Param.track_ms('x', 1)"}, out
    assert all(note.startswith("not gated: too noisy here") for note in out.values()), out


def test_the_gate_selection_leaves_out_exactly_those_figures_in_asv():
    """asv's own selection (asv.benchmarks.Benchmarks) with the regex make compare passes."""
    from asv.benchmarks import Benchmarks

    from tools import compare

    class Conf:
        benchmark_dir = "benchmarks"

    suite = [{"name": "a.Param.track_ms", "params": [["'x'", "'y'"], ["1", "2"]]},
             {"name": "a.Wide.track_ms", "params": []}, {"name": "a.Steady.track_ms", "params": []},
             {"name": "cost.X.track_instructions", "params": [["'p'", "'q'"]]}]
    left_out = compare.too_noisy_to_gate(LEFT_OUT_NOISE)

    def selected(bench):
        b = Benchmarks(Conf(), suite, regex=compare.selection_regex(bench, left_out))
        return {name: b.benchmark_selection[name] for name in b}

    got = selected("")
    assert "a.Wide.track_ms" not in got and "a.Steady.track_ms" in got, got
    # of a.Param's four combinations, ('x', 1) (index 0) is left out, the other three run
    assert got["a.Param.track_ms"] == [1, 2, 3], got
    assert got["cost.X.track_instructions"] == [0, 1], got
    # with a BENCH regex: its selection, minus the left-out figures
    got = selected("^a\\.(Param|Wide)")
    assert set(got) == {"a.Param.track_ms"} and got["a.Param.track_ms"] == [1, 2, 3], got
    assert compare.selection_regex("^cost", {}) == "^cost"


def test_left_out_figures_are_shown_not_gated_and_not_measured(tiny_history, monkeypatch):
    from asv.config import Config

    from tools import compare
    repo, h = tiny_history
    monkeypatch.chdir(repo)
    conf = Config.load(str(repo / "asv.conf.json"))
    note = "not gated: too noisy here (band 1.80)"
    rows, bad = compare.judge(conf, compare.MACHINE, h[3], h[4], None, str(repo / "targets.json"),
                              noise=NOISE["benchmarks"], left_out={"tiny.Figures.track_wide": note,
                                                                    "tiny.Gone.track_never_run": note})
    by = {r[0]: r for r in rows}
    for name in ("tiny.Figures.track_wide", "tiny.Gone.track_never_run"):
        assert by[name][5].startswith(note) and "NOT MEASURED by the gate" in by[name][5], by[name]
        assert by[name][1] != by[name][1] and by[name][2] != by[name][2]  # nan: no value shown as measured
    assert by["tiny.Figures.track_lost_tasks"][5] == "SLOWER" and bad  # the rest judged as before


def test_noise_records_each_figures_unit_for_the_gate():
    from tools.noise import summarize
    out = summarize({"f": [1.0, 2.0], "g": [1.0, 1.1]}, None,
                    {"f": {"unit": "ms", "type": "track"}})
    assert out["f"]["unit"] == "ms" and out["f"]["type"] == "track", out
    assert "unit" not in out["g"], out


def test_a_selection_of_only_too_noisy_figures_measures_nothing_and_says_so(tmp_path, monkeypatch, capsys):
    from tools import compare
    noise = {"a.B.time_x": {"band": 2.0, "values": [1, 2, 1, 2, 1, 2], "unit": "seconds", "type": "time"},
             "a.B.time_y": {"band": 1.01, "values": [1, 1, 1, 1, 1, 1], "unit": "seconds", "type": "time"}}
    left_out = compare.too_noisy_to_gate(noise)
    assert set(left_out) == {"a.B.time_x"}, left_out
    assert compare.nothing_left_to_measure(r"^a\.B\.time_x$", noise, left_out)
    assert not compare.nothing_left_to_measure(r"^a\.B\.", noise, left_out)  # time_y is still measured
    assert not compare.nothing_left_to_measure("", noise, left_out)
    assert not compare.nothing_left_to_measure(r"^a\.B\.time_x$", noise, {})  # ALL=1
    # the gate itself: no asv run (no environment is built), the figure listed, exit 0
    monkeypatch.chdir(ROOT)
    (tmp_path / "noise.json").write_text(json.dumps({"benchmarks": noise}))
    monkeypatch.setattr(compare, "asv", lambda *a: pytest.fail(f"asv ran: {a}"))
    monkeypatch.setattr(compare, "ensure_machine", lambda: None)
    rc = compare.main(["--base", "HEAD", "--bench", r"^a\.B\.time_x$", "--noise", str(tmp_path / "noise.json"),
                       "--config", os.path.join(ROOT, "asv.conf.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "NOTHING MEASURED" in out and "a.B.time_x" in out and "NOT MEASURED by the gate" in out, out
