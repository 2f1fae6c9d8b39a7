"""asv's name for this machine, shared by make bench, compare and noise."""
import json
import os
import platform

from .commands import asv

# The host name, or ASV_MACHINE (the workflows name the machine after the runner's
# hardware, so a change of hardware starts a new history).
MACHINE = os.environ.get("ASV_MACHINE") or platform.node()
MACHINE_ARGS = ["--machine", MACHINE] if os.environ.get("ASV_MACHINE") else []


def ensure_machine():
    """`asv machine --yes` unless the machine file already knows this host."""
    path = os.path.expanduser("~/.asv-machine.json")
    try:
        with open(path) as f:
            known = json.load(f)
    except (OSError, ValueError):
        known = {}
    if MACHINE not in known:
        asv("machine", "--yes", *MACHINE_ARGS, check=True)
    else:
        print(f"asv machine file {path} knows {MACHINE}")
