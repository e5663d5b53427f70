# The two commands a new user needs (see README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench neu-seg
setup:
	bash scripts/setup.sh

# The demo's run folder goes beside the other committed raw runs, so its leaderboard stays a render of it
# (tests/test_published.py); commit both after a deliberate change.
demo: setup
	$(VENV)/bin/harness run configs/matrix/default.yaml --out leaderboards/results/synthetic-demo --leaderboard leaderboards/synthetic-demo.md

# TESTS: pytest arguments, e.g. `make test TESTS=tests/test_published.py` (default: the whole suite)
TESTS ?=
test: setup
	$(PY) -m pytest -q $(TESTS)

bench: setup
	$(PY) benchmarks/run.py
