"""The repository's tooling, one importable package; run its commands from the repository root.

    python -m tools.bench        make bench: benchmark history, offline dashboard, report
    python -m tools.compare      make compare: the pull-request gate
    python -m tools.noise        make noise: each figure's same-code spread (benchmarks/noise.json)
    python -m tools.report       .asv/report.md and report.json from stored results
    python -m tools.explain      which functions made a cost figure rise
    python -m tools.pg_server    a throwaway PostgreSQL server (tests and benchmarks use it too)

Shared parts: commands.py (git and asv), machine.py (asv's machine name).
"""
