# Every target creates its virtualenv and installs what it needs when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The oldest llm this package supports, with the newest llm-echo that runs on it.
OLDEST_VENV := .venv-oldest
OLDEST_PINS := llm==0.30 llm-echo==0.4

.PHONY: demo test test-oldest lint clean docs bench dist check-dist

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,datasette]'
	touch $@

$(OLDEST_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/pip install --quiet -e '.[test]' $(OLDEST_PINS)
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python demo/demo.py

test: $(VENV)/.installed
	$(BIN)/pytest

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python -c "import llm, importlib.metadata as m; print('llm', m.version('llm'))"
	$(OLDEST_VENV)/bin/pytest

# The site goes to site/ (git-ignored); --strict turns every warning, such as a broken
# link or an unresolved API cross-reference, into a failure.
$(VENV)/.docs-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,datasette,docs]'
	touch $@

docs: $(VENV)/.docs-installed
	$(BIN)/mkdocs build --strict

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,datasette,bench]'
	touch $@

bench: $(VENV)/.bench-installed
	$(BIN)/python -m benchmarks

# The sdist and the wheel (built from the sdist) in dist/, checked by twine.
$(VENV)/.release-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[release]'
	touch $@

dist: $(VENV)/.release-installed
	rm -rf dist build
	$(BIN)/python -m build --quiet --outdir dist .
	$(BIN)/twine check --strict dist/*

# The wheel in a fresh virtualenv with no extras: `llm plugins` lists it, and
# `llm async-attachments status` works; then the README's `llm install` line.
check-dist: dist
	$(PYTHON) .ci/check_dist.py dist

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .pytest_cache .ruff_cache *.egg-info site dist build
