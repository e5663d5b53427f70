# The two commands a new user needs (see README): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench neu-seg
setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/harness run configs/matrix/default.yaml --out runs/synthetic-demo --leaderboard leaderboards/synthetic-demo.md

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/run.py
