"""Child processes running benchmarks/_child.py, talking JSON lines on stdin/stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Sequence

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_child.py")


def child_env() -> dict:
    """Environment for child processes: the same prismq_queue the parent imports."""
    env = dict(os.environ)
    paths = [HERE]
    try:
        import prismq_queue  # noqa: F401

        paths.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(prismq_queue.__file__))))
    except ImportError:
        pass
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(paths + ([old] if old else []))
    return env


class Child:
    """A child process running benchmarks/_child.py MODE ARGS, talking JSON lines on stdin/stdout."""

    TIMEOUT = 120.0  # no answer for this long: the child is stuck; fail instead of hanging

    def __init__(self, mode: str, *args: Any):
        import queue
        import threading

        self.mode = mode
        self.proc = subprocess.Popen(
            [sys.executable, CHILD, mode, *[str(a) for a in args]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
            env=child_env(), text=True, bufsize=1,
        )
        self._lines: "queue.Queue[str]" = queue.Queue()

        def pump():
            for line in self.proc.stdout:
                self._lines.put(line)
            self._lines.put("")  # end of output

        threading.Thread(target=pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def recv(self, timeout: float | None = None) -> dict:
        import queue

        try:
            line = self._lines.get(timeout=timeout or self.TIMEOUT)
        except queue.Empty:
            self.proc.kill()
            raise RuntimeError(f"benchmark child ({self.mode}) gave no answer in {timeout or self.TIMEOUT:.0f} s")
        if not line:
            rc = self.proc.wait(timeout=10)
            raise RuntimeError(f"benchmark child ({self.mode}) exited (rc={rc}) without answering")
        return json.loads(line)

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
            except (BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:
            self.proc.stdin.close()
        except OSError:
            pass


def start_children(mode: str, argsets: Sequence[Sequence[Any]]) -> list[Child]:
    """Start one child per argument set and wait until each says it is ready."""
    kids = [Child(mode, *a) for a in argsets]
    try:
        for k in kids:
            msg = k.recv()
            if not msg.get("ready"):
                raise RuntimeError(f"child not ready: {msg}")
    except BaseException:
        for k in kids:
            k.proc.kill()
            k.close()
        raise
    return kids


def now() -> float:
    """The clock every process of a benchmark shares (CLOCK_MONOTONIC is system-wide on Linux)."""
    return time.monotonic()
