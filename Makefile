# The two commands: `make run` (the whole platform on the embedded store) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint demo venv clean help node-interop

help:
	@echo "make run    set up .venv and run 'pystrument up' (embedded store + OTLP receiver)"
	@echo "make test   set up .venv, lint (ruff, import-linter), run the test suite"
	@echo "make demo   send traffic from the example Flask app to a running 'make run'"

# (setup.py and the C source: pip builds the sampler's native reader in place.)
$(STAMP): pyproject.toml setup.py otel_pyinstrument_processor/_native_sampler.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/pystrument up

demo: $(STAMP)
	$(BIN)/pystrument demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The Node.js OTLP exporters the interop tests run (npm ci; skipped while node_modules is
# newer than the lock file).
NODE_INTEROP := tests/interop/node
$(NODE_INTEROP)/node_modules/.package-lock.json: $(NODE_INTEROP)/package-lock.json
	cd $(NODE_INTEROP) && npm ci --no-audit --no-fund

node-interop: $(NODE_INTEROP)/node_modules/.package-lock.json

test: lint node-interop
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info build otel_pyinstrument_processor/*.so
