"""The machine's load while a measurement runs, and a background load to measure under.

Wall-clock figures on this 2-core machine depend on what else runs: a single call's
cross-thread wake-up is dearer when cores are idle (issue 12), multi-process rates lose
CPU to other jobs.  So `make noise` measures some rounds under a load it starts itself
(Spinners), and both `make noise` and `make compare` record the load average they saw
(LoadSampler), so the gate can say when it ran busier than its bands were measured.
"""
import os
import signal
import subprocess
import sys
import threading

# One spinner: busy for BUSY_MS, then asleep for the rest of its period, forever.  A duty
# cycle rather than a flat-out loop: the load other jobs put on a shared machine comes and
# goes, and it is the change between idle and busy cores that moves the single-call figures.
SPIN = """
import sys, time
busy, period = float(sys.argv[1]) / 1000, float(sys.argv[2]) / 1000
while True:
    t = time.perf_counter()
    while time.perf_counter() - t < busy:
        pass
    time.sleep(max(0.0, period - busy))
"""
PERIOD_MS = 100.0


def loadavg():
    """The 1-, 5- and 15-minute load averages, or None where the system has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


class LoadSampler:
    """Samples the 1-minute load average every `every` seconds in a daemon thread while
    in its `with` block: .max and .mean of what it saw (None if it saw nothing)."""

    def __init__(self, every=5.0):
        self.every, self.samples = every, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            la = loadavg()
            if la:
                self.samples.append(la[0])
            if self._stop.wait(self.every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        la = loadavg()  # one last sample: a run shorter than `every` still has two
        if la:
            self.samples.append(la[0])

    @property
    def max(self):
        return max(self.samples) if self.samples else None

    @property
    def mean(self):
        return round(sum(self.samples) / len(self.samples), 2) if self.samples else None


class Spinners:
    """`procs` processes that each keep a core busy `duty` of the time, started on entry and
    stopped on exit (by their own pids, also after an exception or Ctrl-C)."""

    def __init__(self, procs, duty):
        if procs < 0 or not 0 < duty <= 1:
            raise ValueError(f"spinners: procs must be >= 0 and duty in (0, 1], got {procs}, {duty}")
        self.procs, self.duty, self._running = procs, duty, []

    def __enter__(self):
        busy = PERIOD_MS * self.duty
        for _ in range(self.procs):
            self._running.append(subprocess.Popen(
                [sys.executable, "-c", SPIN, str(busy), str(PERIOD_MS)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
        return self

    def __exit__(self, *exc):
        for p in self._running:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self._running:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._running = []

    def describe(self):
        return f"{self.procs} spinner process(es), each busy {self.duty:.0%} of every {PERIOD_MS:g} ms"
