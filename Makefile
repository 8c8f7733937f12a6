# Set-up and checks. `make install` then `make test` is all a fresh machine needs.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: install test bench clean studies

install:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"

test:
	WANDB_MODE=offline $(PY) -m pytest -q tests

bench:
	WANDB_MODE=offline $(PY) benchmarks/run_all.py $(BENCH)

# caches only: runs/ holds your checkpoints, logs and W&B files and is never removed here
clean:
	rm -rf .pytest_cache lightning_logs wandb

# the headline studies, timed (meant for a GPU machine; see benchmarks/studies.sh)
studies:
	WANDB_MODE=offline PYTHON=$(PY) benchmarks/studies.sh runs/studies

# every config a few dozen steps on the GPU in 32-true, bf16-mixed and 16-mixed (benchmarks/gpu_check.md);
# writes its table to docs/results/gpu_check/. Options: make gpu-check GPU_CHECK="--workers 4 --steps 40"
.PHONY: gpu-check
gpu-check:
	WANDB_MODE=disabled $(PY) benchmarks/gpu_check.py $(GPU_CHECK)
