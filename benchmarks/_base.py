"""The shapes benchmark classes share: one per backend, and a figure's unit and name."""

from __future__ import annotations

from ._store import BACKENDS, need_backend, pq


class OnEachBackend:
    """A benchmark class run once per backend (param ``backend``), skipped where this
    commit or this machine cannot measure that backend. Subclasses with more
    parameters put ``BACKENDS`` first in their own ``params``."""

    params = [BACKENDS]
    param_names = ["backend"]

    def setup(self, backend, *rest):
        pq()
        need_backend(backend)


def figure(unit: str, name: str):
    """Give a benchmark method its unit and the name the dashboard shows."""

    def mark(fn):
        fn.unit = unit
        fn.pretty_name = name
        return fn

    return mark
