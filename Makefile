# The two set-up commands are `make run` (quickstart) and `make test`; both install first when needed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint format tensorboard bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: install
	$(PY) -m diffusion_lab.train experiment=quickstart

test: install
	$(PY) -m pytest

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

clean:
	rm -rf outputs multirun/*/ .pytest_cache .ruff_cache
