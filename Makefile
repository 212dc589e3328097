# Every target creates its virtualenv and installs what it needs when missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# The other Pythons CI tests on: pyenv's where pyenv has them (as on the CI machine),
# else whatever python3.12/python3.13 is on PATH. Override: make test-py312 PYTHON312=...
PYTHON312 ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12)
PYTHON313 ?= $(shell PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null || command -v python3.13)
# The newest Python, for the newest releases of everything (puremagic 2 needs 3.12+).
NEWEST_PYTHON ?= $(PYTHON313)
VENV := .venv
BIN := $(VENV)/bin
# The oldest release of every dependency pyproject.toml allows (.ci/lower_bounds.py),
# plus the newest llm-echo that runs on llm 0.30, and encode's httpx, which llm 0.30
# imports without declaring it (its openai 1.x/2.x brought it; openai 3 is on httpx2).
OLDEST_VENV := .venv-oldest
OLDEST_EXTRA := llm-echo==0.4 httpx
NEWEST_VENV := .venv-newest
# Prints the Python and the versions a suite runs on, first thing in its log.
VERSIONS := -c "import importlib.metadata as m, platform; print('Python', platform.python_version(), *(f'{d}=={m.version(d)}' for d in ('llm', 'httpx2', 'httpcore2', 'puremagic', 'hishel')))"

.PHONY: demo test test-oldest test-py312 test-py313 test-newest lint clean docs bench dist check-dist test-peers

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,datasette]'
	touch $@

$(OLDEST_VENV)/.installed: pyproject.toml Makefile .ci/lower_bounds.py
	$(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) .ci/lower_bounds.py > $(OLDEST_VENV)/constraints.txt
	$(OLDEST_VENV)/bin/pip install --quiet -c $(OLDEST_VENV)/constraints.txt -e '.[test]' $(OLDEST_EXTRA)
	touch $@

# .venv-py312, .venv-py313: the test and datasette extras on that Python. The suites
# on other versions skip the kit's fresh-virtualenv test (marker pypi): `make test`
# runs it, and it tests packaging, not the Python or llm version.
.venv-py%/.installed: pyproject.toml
	@test -n "$(PYTHON$*)" || { echo "No Python for .venv-py$*: set PYTHON$*=/path/to/python"; exit 1; }
	$(PYTHON$*) -m venv .venv-py$*
	.venv-py$*/bin/python -m pip install --quiet --upgrade pip
	.venv-py$*/bin/pip install --quiet -e '.[test,datasette]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python demo/demo.py

test: $(VENV)/.installed
	$(BIN)/python $(VERSIONS)
	$(BIN)/pytest

test-oldest: $(OLDEST_VENV)/.installed
	$(OLDEST_VENV)/bin/python $(VERSIONS)
	$(OLDEST_VENV)/bin/python .ci/lower_bounds.py --check
	$(OLDEST_VENV)/bin/pytest -m "not pypi"

test-py312: .venv-py312/.installed
	.venv-py312/bin/python $(VERSIONS)
	.venv-py312/bin/pytest -m "not pypi"

test-py313: .venv-py313/.installed
	.venv-py313/bin/python $(VERSIONS)
	.venv-py313/bin/pytest -m "not pypi"

# No stamp: every run upgrades everything to the newest release there is now.
test-newest:
	@test -n "$(NEWEST_PYTHON)" || { echo "No Python for $(NEWEST_VENV): set NEWEST_PYTHON"; exit 1; }
	test -x $(NEWEST_VENV)/bin/python || $(NEWEST_PYTHON) -m venv $(NEWEST_VENV)
	$(NEWEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NEWEST_VENV)/bin/pip install --quiet --upgrade --upgrade-strategy eager -e '.[test,datasette]'
	$(NEWEST_VENV)/bin/python $(VERSIONS)
	$(NEWEST_VENV)/bin/pytest -m "not pypi"

# Other llm plugins' own test suites, from their sdists on PyPI (pinned in .ci/peers.py
# and .ci/peers/pins.json), run offline without and with this package, compared per
# test: none may fail only because we are installed. Virtualenvs in .venv-peers/;
# docs/peers.md says which plugins and why.
test-peers:
	$(PYTHON) .ci/peers.py

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
	$(BIN)/mypy --strict llm_async_attachments

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .venv-py312 .venv-py313 $(NEWEST_VENV) .pytest_cache \
		.ruff_cache *.egg-info site dist build
