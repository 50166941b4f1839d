# The two set-up commands are `make run` (quickstart) and `make test`; both install first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test test-fast lint format tensorboard bench gpu-prep gpu-check clean

install: $(STAMP)

# pip byte-compiles what it installs on one core, a large share of its time for torch's CUDA
# build; compileall does the same on every core. (Without the .pyc files, a machine that sets
# PYTHONDONTWRITEBYTECODE would compile torch anew in every process.) Errors are left unprinted:
# torch ships a file in Python 3.12 syntax, which pip leaves uncompiled too.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	$(PY) -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

run: install
	$(PY) -m diffusion_lab.train experiment=quickstart

# Two pytest workers of one torch thread each fill the two cores of the reference machine without
# the spin-waiting that two multi-threaded torch processes cause each other. Each worker is sent
# one test at a time (--maxschedchunk 1), the end-to-end runs first (tests/conftest.py).
TEST_WORKERS ?= 2
TEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -n $(TEST_WORKERS) --maxschedchunk 1 \
	--durations=15

test: install
	$(TEST)

# The unit tier: no end-to-end runs (subprocesses, training to completion) and no real data.
test-fast: install
	$(TEST) -m "not slow and not real_data"

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

tensorboard: install
	$(VENV)/bin/tensorboard --logdir outputs

bench: install
	$(PY) -m diffusion_lab.bench

# Fill the git-ignored .gpu/ with Hydra's wheels and a CIFAR-10 subset for a bare GPU machine.
gpu-prep: install
	$(PY) experiments/performance/prepare_gpu_check.py

# On the GPU machine (torch and Lightning installed there): bench, train, generate, classify.
gpu-check:
	bash experiments/performance/gpu_check.sh

clean:
	rm -rf outputs multirun/*/ .pytest_cache .ruff_cache
