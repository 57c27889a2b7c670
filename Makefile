# Mailfiler: `make run` starts everything locally, `make test` checks everything.
# Every target installs what it needs first (idempotent), so a fresh machine needs only
# Python 3.11, Node.js/npm and make.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
# Azure may run the app on 3.12: `make test` also runs, on 3.12, the tests of the code whose
# behaviour a Python version can change (parsing and the core, storage SDK, mailbox protocols,
# TLS, HTTP serving, the API, one end-to-end pipeline); the scenario tests drive that same code
# and run on 3.11 only. A deliberate trade-off for the suite's time (README, Development).
PY312_TESTS ?= tests/core tests/store tests/sources tests/test_api.py tests/test_api_schema.py \
	tests/test_host_semantics.py tests/test_graph_intake.py tests/test_group_commit.py \
	tests/test_cold_start.py tests/test_outbound_wire.py tests/test_outbound_smtp.py \
	tests/test_pipeline.py tests/test_settings_doc.py
PYTHON312 ?= $(shell for p in python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12); do "$$p" -c '' 2>/dev/null && { echo "$$p"; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
AZURITE := node_modules/.bin/azurite
# pytest-xdist workers (`make unit WORKERS=0` runs in one process); each worker starts its own
# Azurite on free ports. loadgroup: tests marked xdist_group(name) stay on one worker.
WORKERS ?= auto
XDIST := -n $(WORKERS) --dist loadgroup

.PHONY: setup run demo-imap test lint typecheck unit unit-py312 bench clean

setup: $(STAMP) $(AZURITE) local.settings.json

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(AZURITE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(AZURITE)

local.settings.json: local.settings.example.json
	test -f $@ || cp $< $@

# Azurite in memory (unless a storage answers on its ports), then the local host with the
# configuration local.settings.json names. Ports: `make run PORT=7072 AZURITE_PORTS=20000`
# (or BLOB_PORT/QUEUE_PORT/TABLE_PORT); command-line variables reach the script's environment.
run: setup
	./scripts/run-local.sh

# A throwaway Dovecot with the sample mail, filed over IMAP (`make demo-imap PORT=7072`).
demo-imap: setup
	$(PY) scripts/demo_imap.py $(if $(PORT),--port $(PORT))

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

typecheck: $(STAMP)
	$(PY) -m mypy

# Each test process (every xdist worker) starts its own Azurite on free ports (tests/conftest.py).
unit: setup
	$(PY) -m pytest $(XDIST)

unit-py312: setup
	@if [ -z "$(PYTHON312)" ]; then echo "python3.12 not found: skipping the 3.12 run"; exit 0; fi; \
	set -e; test -x .venv312/bin/python || $(PYTHON312) -m venv .venv312; \
	.venv312/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt; \
	.venv312/bin/python -m pytest -q -m "not slow" -p no:cacheprovider $(XDIST) $(PY312_TESTS)

test: setup lint typecheck unit unit-py312

bench: setup
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv312 node_modules .azurite .pytest_cache .mypy_cache .ruff_cache
