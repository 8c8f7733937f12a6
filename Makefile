# Set-up and checks. `make install` then `make test` is all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install test bench docs clean

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"

test:
	WANDB_MODE=offline $(PY) -m pytest -q tests

bench:
	WANDB_MODE=offline $(PY) benchmarks/run_all.py $(BENCH)

clean:
	rm -rf .pytest_cache lightning_logs wandb zoo_runs
