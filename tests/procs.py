"""Helpers for the multi-process tests: start tests/proc_worker.py, and count what the workers ran."""

import collections
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def spawn(location, log, *extra):
    """Start a worker process on `location` that logs every task it runs to `log`."""
    return subprocess.Popen([sys.executable, os.path.join(HERE, "proc_worker.py"), location, log, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def executions(tmp_path):
    """How many times each task id was run, over every *.log in tmp_path."""
    runs = collections.Counter()
    for name in os.listdir(tmp_path):
        if name.endswith(".log"):
            with open(tmp_path / name) as f:
                runs.update(int(line) for line in f if line.strip())
    return runs
