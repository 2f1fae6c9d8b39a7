# Two commands do all the set-up: `make test` and `make bench`.
# Each creates what it needs (a virtual environment with the package, the
# test tools and asv) on first use and reuses it after.
#
#   make test                       lint, then the tests (also checks the benchmark suite)
#   make lint                       ruff over the repository, mypy over prismq_queue/ (pyproject.toml)
#   make bench                      benchmark the newest commits of main that have no
#                                   results here, publish the dashboard, write the report
#        RANGE=44e7cd0..main        a range of commits instead (ALL, a..b; not tags)
#        COUNT=10                   how many of the newest commits by default
#        QUICK=1                    one sample per benchmark (a fast, rough pass)
#        BENCH=regex                only the benchmarks matching regex (asv -b)
#   make preview                    serve the dashboard (asv preview)
#   make compare [BASE=main]        the pull-request gate: HEAD against its merge base
#        BENCH=regex                with BASE; exits non-zero when a figure got worse beyond
#                                   its own threshold (benchmarks/noise.json: cost figures
#                                   fail at +1%, wall clocks outside their measured band);
#                                   wall clocks whose band is too wide are listed "not gated"
#                                   and not measured (they could never fail: ALL=1 measures
#                                   them too); those whose band comes from fewer than 6
#                                   values, or is missing, are measured and shown "not gated"; a wall
#                                   clock judged slower is measured again (just the suspects,
#                                   both commits interleaved) and fails only if that confirms
#                                   it; the verdict says when the gate's load was above the
#                                   load its bands were measured at
#        FACTOR=...                 gate those last two kinds at this factor instead
#        ALL=1                      also measure the figures too noisy here to gate
#        ROUNDS=n                   asv rounds per commit: more samples for time_ benchmarks;
#                                   a track_ figure is just measured n times, asv keeps the last
#                                   (no more samples, no steadier value: its band decides alone)
#   make noise [NOISE_ROUNDS=3]     measure each figure's same-code spread on this machine and
#        BENCH=regex                write it to benchmarks/noise.json (the gate's thresholds);
#                                   3 rounds = 6 values per figure, the fewest a band must
#                                   come from to gate (tools/compare.py MIN_BAND_VALUES);
#                                   ~12-15 min a round for the whole suite (~40-45 min)
#        NOISE_LOAD_ROUNDS=1        the last n rounds run under a background load the tool
#                                   starts itself (one spinner per core, busy half the time):
#                                   the gate is used with other jobs running (0: all quiet)
#        NOISE_FRESH=1              drop the entries this run did not measure (a whole new file)
#   make bench, compare and noise start throwaway PostgreSQL servers for the PostgreSQL
#   figures (tools/pg_server.py); without PostgreSQL those figures are reported unmeasured.
#
# The cost family (benchmarks/cost.py) counts instructions with valgrind: install the
# Debian/Ubuntu package `valgrind` (.ci/run does); without it those figures are skipped.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ASV_VERSION := 0.6.6
ASV_STAMP := $(VENV)/.asv-$(ASV_VERSION)

RANGE ?=
COUNT ?= 10
QUICK ?=
BENCH ?=
BASE ?= main
ROUNDS ?=
# Empty: wall-clock figures without a band of at least 6 values are shown, not gated.
# Set, it gates them at this factor; every other figure's threshold comes from its own
# measured spread (tools/compare.py).
FACTOR ?=
# Set, make compare also measures the figures whose band is too wide to gate (shown, never failed).
ALL ?=
# 2 values per round: 3 rounds give the 6 a band needs to gate (tools/compare.py MIN_BAND_VALUES)
NOISE_ROUNDS ?= 3
# of which the last runs under a background load (tools/load.py): bands of a loaded machine
NOISE_LOAD_ROUNDS ?= 1
NOISE_FRESH ?=

.PHONY: test lint venv asv bench preview compare noise clean

venv: $(STAMP) $(ASV_STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# The benchmark-only dependencies, pinned as in asv.conf.json's matrix (a test
# checks that the two lists agree): the suite test runs every benchmark once
# in this venv, peers included.
BENCH_DEPS := psutil==7.2.2 huey==3.5.4 persist-queue==1.1.0 litequeue==0.9 pgqueuer==1.6.0

# asv and virtualenv (asv builds its benchmark environments with virtualenv).
# Not tied to pyproject.toml, so a throwaway clone can reuse this venv (VENV=...).
$(ASV_STAMP): | $(VENV)/bin/python
	$(PY) -m pip install --quiet asv==$(ASV_VERSION) virtualenv $(BENCH_DEPS)
	touch $(ASV_STAMP)

asv: $(ASV_STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: lint $(STAMP) $(ASV_STAMP)
	@command -v valgrind >/dev/null || echo "note: valgrind is not installed: the cost family and its gate tests skip (apt-get install valgrind; .ci/run does)"
	$(PY) -m pytest -q

bench: $(ASV_STAMP)
	$(PY) -m tools.bench --count '$(COUNT)' $(if $(RANGE),--range '$(RANGE)') \
	    $(if $(filter-out 0 no false,$(QUICK)),--quick) $(if $(BENCH),--bench '$(BENCH)')

preview: $(ASV_STAMP)
	$(VENV)/bin/asv preview

compare: $(ASV_STAMP)
	$(PY) -m tools.compare --base '$(BASE)' $(if $(FACTOR),--factor '$(FACTOR)') $(if $(BENCH),--bench '$(BENCH)') \
	    $(if $(ROUNDS),--rounds '$(ROUNDS)') $(if $(filter-out 0 no false,$(ALL)),--all)

noise: $(ASV_STAMP)
	$(PY) -m tools.noise --rounds '$(NOISE_ROUNDS)' --load-rounds '$(NOISE_LOAD_ROUNDS)' $(if $(BENCH),--bench '$(BENCH)') \
	    $(if $(filter-out 0 no false,$(NOISE_FRESH)),--fresh)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache .mypy_cache
