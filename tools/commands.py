"""The two external commands every tool drives: git and asv (run with this Python)."""
import subprocess
import sys


def git(*args, cwd=None):
    """git's output, stripped; raises CalledProcessError when git fails."""
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


# An argument longer than this is echoed shortened: the gate's selection regex lists
# every figure it leaves out (tools/compare.py selection_regex), several KB.
ECHO_MAX = 400


def asv(*args, check=False):
    """Run asv with this interpreter, echoing the command; its exit status (SystemExit if
    `check` and it failed)."""
    shown = [a if len(a) <= ECHO_MAX else f"{a[:ECHO_MAX // 2]}...({len(a)} characters)" for a in args]
    print("$ asv " + " ".join(shown), flush=True)
    rc = subprocess.call([sys.executable, "-m", "asv", *args])
    if check and rc != 0:
        raise SystemExit(f"asv {args[0]} failed (exit {rc})")
    return rc
