"""The asv benchmark suite itself: `asv check` passes and every benchmark runs once.

Every benchmark in benchmarks/ is run against the working tree with
PRISMQ_BENCH_SMOKE=1 (tiny pinned sizes, one repeat), by calling the classes the way
asv does (setup_cache, setup, benchmark, teardown), in a child process; each track_
must return a finite number (>= 0, except an RSS growth) and nothing may raise. One
cheap benchmark also runs through asv itself (`asv run --python=same --quick
--dry-run`). No timing is asserted.
Skipped when asv is not installed.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import math
import os
import pkgutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_LIBS = {"huey": "huey", "persist_queue": "persistqueue", "litequeue": "litequeue", "pgqueuer": "pgqueuer"}
PREFIXES = ("time_", "track_", "peakmem_", "mem_", "timeraw_")


def _asv_env() -> dict:
    env = dict(os.environ)
    env["PRISMQ_BENCH_SMOKE"] = "1"
    env.setdefault("HOME", tempfile.gettempdir())
    return env


def _asv(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asv", *args], cwd=ROOT, env=_asv_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def asv_ready():
    pytest.importorskip("asv", reason="asv is not installed (pip install asv==0.6.6)")
    out = _asv("machine", "--yes")
    assert out.returncode == 0, out.stdout + out.stderr


def test_asv_check(asv_ready):
    out = _asv("check", "--python=same")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "No problems found" in out.stdout + out.stderr


def test_one_benchmark_through_asv(asv_ready):
    out = _asv("run", "--python=same", "--quick", "--dry-run", "--show-stderr",
               "--bench", r"^throughput\.TimedEnqueue\.")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "failed" not in text, text
    assert "time_enqueue_many_100k" in text, text


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway PostgreSQL server (tools/pg_server.py) when one can be started, else None."""
    if importlib.util.find_spec("asyncpg") is None:
        yield None
        return
    try:
        from tools.pg_server import TempPostgres
    except ImportError:
        yield None
        return
    server = TempPostgres()
    try:
        server.start()
    except Exception:  # noqa: BLE001 - no server binaries here: the PostgreSQL params skip
        yield None
        return
    try:
        yield server.url
    finally:
        server.stop()


def test_every_benchmark_runs_once(asv_ready, pg_url):
    env = _asv_env()
    env.pop("PRISMQ_BENCH_PG", None)
    if pg_url:
        env["PRISMQ_BENCH_PG"] = pg_url
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ran"] > 50, report
    allowed = {k for k, mod in PEER_LIBS.items() if importlib.util.find_spec(mod) is None}
    if not pg_url:  # the PostgreSQL params and peers skip without a server
        allowed |= {"'postgresql'", "'pgqueuer'", "'prismq_queue_pg'"}
    allowed.add("postgresql_durable")  # its own server (make bench starts one); not started here
    bad = [f for f in report["failures"]]
    bad += [s for s in report["skips"] if not any(p in s for p in allowed)]
    assert not bad, "\n\n".join(bad)


def test_rates_name_real_time_benchmarks():
    """benchmarks/rates.json (time_ -> tasks per call, for the report) agrees with each function's tasks_per_call."""
    sys.path.insert(0, ROOT)
    with open(os.path.join(ROOT, "benchmarks", "rates.json")) as fh:
        rates = {k: v for k, v in json.load(fh).items() if not k.startswith("_")}
    declared = {f"{q}.{n}": getattr(cls, n).tasks_per_call
                for q, cls, names in _benchmarks() for n in names if hasattr(getattr(cls, n), "tasks_per_call")}
    assert rates == declared
    assert all(name.split(".")[-1].startswith("time_") for name in rates), rates


def test_targets_name_real_benchmarks():
    """Every headline in benchmarks/targets.json names a benchmark and parameter values that exist."""
    sys.path.insert(0, ROOT)
    with open(os.path.join(ROOT, "benchmarks", "targets.json")) as fh:
        targets = json.load(fh)
    found = {f"{q}.{n}": cls for q, cls, names in _benchmarks() for n in names}
    for t in targets:
        assert t["name"] in found, t["name"]
        assert t["better"] in ("higher", "lower"), t
        assert t.get("target") is None or isinstance(t["target"], (int, float)), t
        cls = found[t["name"]]
        params = getattr(cls, "params", [])
        if params and not isinstance(params[0], (list, tuple)):
            params = [params]
        names = list(getattr(cls, "param_names", []))
        assert sorted(t["params"]) == sorted(names), (t["name"], t["params"], names)
        for key, value in t["params"].items():
            assert value in [repr(v) for v in params[names.index(key)]], (t["name"], key, value)


# ---------------------------------------------------------------- the driver (run as a script)
def _benchmarks():
    import benchmarks

    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"benchmarks.{info.name}")
        for cname, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ != mod.__name__ or cname.startswith("_"):
                continue
            names = [n for n in dir(cls) if n.startswith(PREFIXES) and callable(getattr(cls, n))]
            if names:
                yield f"{info.name}.{cname}", cls, names


def _teardown(obj, args, label: str, failures: list) -> None:
    if hasattr(obj, "teardown"):
        try:
            obj.teardown(*args)
        except Exception:  # noqa: BLE001
            import traceback

            failures.append(f"{label} teardown: {traceback.format_exc()}")


def _drive() -> dict:
    sys.path.insert(0, ROOT)
    os.environ["PRISMQ_BENCH_SMOKE"] = "1"
    ran, failures, skips, values = 0, [], [], {}
    workdir = tempfile.mkdtemp(prefix="prismq-bench-smoke-")
    os.chdir(workdir)  # setup_cache writes its files into the working directory, as under asv
    for qual, cls, names in _benchmarks():
        params = getattr(cls, "params", [])
        if params and not isinstance(params[0], (list, tuple)):
            params = [params]
        combos = list(itertools.product(*params)) if params else [()]
        cache = []
        if hasattr(cls, "setup_cache"):
            try:
                cache = [cls().setup_cache()]
            except NotImplementedError as exc:
                skips.append(f"{qual}.setup_cache: {exc}")
                continue
            except Exception:  # noqa: BLE001
                import traceback

                failures.append(f"{qual}.setup_cache: {traceback.format_exc()}")
                continue
        for name in names:
            for combo in combos:
                label = f"{qual}.{name}{[c for c in combo] if combo else ''}"
                obj = cls()
                args = [*cache, *combo]
                t0 = time.perf_counter()
                try:
                    if hasattr(obj, "setup"):
                        obj.setup(*args)
                except NotImplementedError as exc:
                    skips.append(f"{label}: {exc}")
                    _teardown(obj, args, label, failures)  # asv tears down after a skip too
                    continue
                except Exception:  # noqa: BLE001
                    import traceback

                    failures.append(f"{label} setup: {traceback.format_exc()}")
                    _teardown(obj, args, label, failures)
                    continue
                try:
                    value = getattr(obj, name)(*args)
                    if name.startswith("track_"):
                        # a growth (RSS after - before) may be negative; every other figure is >= 0
                        signed = "growth" in name
                        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                                or not math.isfinite(value) or (value < 0 and not signed):
                            raise AssertionError(f"returned {value!r}, not a finite number"
                                                 + ("" if signed else " >= 0"))
                        values[label] = value
                    ran += 1
                except NotImplementedError as exc:
                    failures.append(f"{label}: NotImplementedError outside setup: {exc}")
                except Exception:  # noqa: BLE001
                    import traceback

                    failures.append(f"{label}: {traceback.format_exc()}")
                finally:
                    _teardown(obj, args, label, failures)
                print(f"{time.perf_counter() - t0:7.2f}s {label}", file=sys.stderr)
    return {"ran": ran, "failures": failures, "skips": skips, "values": values}


if __name__ == "__main__":
    print(json.dumps(_drive()))


def test_make_installs_the_benchmark_dependencies_pinned_in_asv_conf():
    """The test venv's BENCH_DEPS (Makefile) pin the same versions as asv.conf.json's matrix."""
    import re

    with open(os.path.join(ROOT, "asv.conf.json")) as f:
        conf = json.loads("".join(line for line in f if not line.lstrip().startswith("//")))
    with open(os.path.join(ROOT, "Makefile")) as f:
        deps = re.search(r"^BENCH_DEPS := (.*)$", f.read(), re.M).group(1).split()
    pinned = dict(d.split("==") for d in deps)
    matrix = conf["matrix"]["req"]
    for name, version in pinned.items():
        assert matrix.get(name) == [version], (name, version, matrix.get(name))


def test_suite_imports_the_package_once_and_imports_without_it():
    """asv forks every benchmark from a process that imported the suite: the suite imports
    prismq_queue there (not again in each fork), and still imports on a commit without it."""
    with_pkg = "import sys, benchmarks._helpers; print('prismq_queue' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", with_pkg], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True", out.stdout
    without = ("import sys; sys.modules['prismq_queue'] = None  # import prismq_queue raises ImportError\n"
               "import benchmarks._helpers as h\n"
               "try:\n    h.pq()\nexcept NotImplementedError:\n    print('skipped')\n")
    out = subprocess.run([sys.executable, "-c", without], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "skipped", out.stdout
