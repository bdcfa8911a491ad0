# faas developer commands. Quick start: `make run` (serve examples/ on :9000), `make test`.
#
# The virtualenv lives in .venv; the project is (re)installed into it only when
# pyproject.toml changes (stamp files inside .venv record the last install).

PYTHON ?= python3
HOST ?= 127.0.0.1
PORT ?= 9000
DATA_DIR ?= ./.faas
DEPLOY ?= examples
PYTEST_ARGS ?=

VENV := .venv
VENV_PY := $(VENV)/bin/python
PIP := $(VENV_PY) -m pip --disable-pip-version-check
LINT_PATHS := $(wildcard faas runtimes tests bench)

.PHONY: run test lint venv install clean distclean help

help:
	@echo "make run        serve $(DEPLOY)/ on http://$(HOST):$(PORT) (data in $(DATA_DIR))"
	@echo "make test       run the test suite (pytest -q)"
	@echo "make lint       ruff check + ruff format --check"
	@echo "make clean      remove caches, build files and install stamps"
	@echo "make distclean  clean, and remove .venv and $(DATA_DIR)"

# The venv: created once with $(PYTHON); an existing .venv is reused as it is.
$(VENV_PY):
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "faas needs Python >= 3.11: set PYTHON=python3.X" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

venv: $(VENV_PY)

# One stamp per set of extras; each is redone only when pyproject.toml is newer.
$(VENV)/.stamp-base: pyproject.toml | $(VENV_PY)
	$(PIP) install -q -e .
	touch $@

$(VENV)/.stamp-test: pyproject.toml | $(VENV_PY)
	$(PIP) install -q -e '.[test]'
	touch $@ $(VENV)/.stamp-base

$(VENV)/.stamp-dev: pyproject.toml | $(VENV_PY)
	$(PIP) install -q -e '.[dev]'
	touch $@ $(VENV)/.stamp-base

install: $(VENV)/.stamp-base

# Foreground; Ctrl-C (or SIGTERM to make) drains in-flight invokes and stops.
run: $(VENV)/.stamp-base
	exec $(VENV)/bin/faas serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) --deploy $(DEPLOY)

# The whole suite under tests/; any non-zero pytest status (5 = no tests ran) fails.
test: $(VENV)/.stamp-test
	$(VENV_PY) -m pytest -q $(PYTEST_ARGS)

lint: $(VENV)/.stamp-dev
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
	rm -f $(VENV)/.stamp-base $(VENV)/.stamp-test $(VENV)/.stamp-dev
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(DATA_DIR)
