# fapiao-bridge — the two commands a new user needs are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
# uv from PATH, else `$(PYTHON) -m uv`, else the pinned wheel fetched into .tools/ (scripts/uv):
# works with Debian's stock python3, which refuses `pip install` (PEP 668).
UV ?= scripts/uv
export PYTHON
export UV_PYTHON_DOWNLOADS ?= never
VENV := .venv
PY := $(VENV)/bin/python
PROD_VENV ?= .venv-production
PG_TEST_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
# Two Redis databases: the PostgreSQL and the SQLite suites run at the same time in `make test`
# and each FLUSHDBs its own around tests.
REDIS_TEST_URL ?= redis://127.0.0.1:6379/15
REDIS_TEST_URL_SQLITE ?= redis://127.0.0.1:6379/14
TEST_LOG_DIR ?= .test-logs
# yes: in test-suites, the tests that do not depend on the database run in the SQLite suite only
# (scripts/test-suites.sh); no: every test in both
DB_INDEPENDENT_ONCE ?= yes
PYTEST_ARGS ?=

.PHONY: install install-runtime demo test test-tools test-production test-suites test-pg \
	test-sqlite lint \
	format services bench bench-full clean

## install: .venv with exactly what uv.lock pins, development tools included (tests, lint)
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml uv.lock
	$(UV) sync --frozen --python $(PYTHON)
	@touch $@ $(VENV)/.installed-runtime

## install-runtime: .venv with what the bridge and the demo run on, no development tools
##                  (--inexact: a venv that already has them keeps them)
install-runtime: $(VENV)/.installed-runtime

$(VENV)/.installed-runtime: pyproject.toml uv.lock
	$(UV) sync --frozen --no-dev --extra demo --inexact --python $(PYTHON)
	@touch $@

## demo: the whole bridge end to end against the simulator (SQLite, Redis or a fallback)
##       DEMO_ARGS=--keep-running keeps it up; DEMO_ARGS=--headless prints plain lines
DEMO_ARGS ?=
demo: install-runtime
	$(PY) -m demo $(DEMO_ARGS)

## services: make sure PostgreSQL and Redis answer on loopback (starts them when installed)
services:
	@scripts/ensure-services.sh

## test: the production install's smoke run, then the whole suite against PostgreSQL and against
##       the SQLite default, both at the same time (test-suites)
test: install services test-tools test-production test-suites

## test-tools: system tools some tests drive (promtool, chromium), installed when missing
test-tools:
	@scripts/ensure-test-tools.sh

## test-production: build the environment the Dockerfile builds (no dev dependencies) and take
##                  one document to `invoiced` with api, worker, beat and Flower started from it
test-production: services
	@echo "== production install =="
	UV=$(UV) scripts/build-production-env.sh $(PROD_VENV)
	FAPIAO_SMOKE_DATABASE_URL=$(PG_TEST_URL) $(PROD_VENV)/bin/python scripts/production_smoke.py

## test-suites: test-pg and test-sqlite as two concurrent pytest processes, the tests that do not
##              depend on the database in the SQLite one only (DB_INDEPENDENT_ONCE=no: in both);
##              each log goes to $(TEST_LOG_DIR)/, printed in full when its suite ends; fails if
##              either fails
test-suites: services
	@PY=$(PY) PG_TEST_URL=$(PG_TEST_URL) REDIS_TEST_URL=$(REDIS_TEST_URL) \
		REDIS_TEST_URL_SQLITE=$(REDIS_TEST_URL_SQLITE) TEST_LOG_DIR=$(TEST_LOG_DIR) \
		DB_INDEPENDENT_ONCE=$(DB_INDEPENDENT_ONCE) PYTEST_ARGS="$(PYTEST_ARGS)" scripts/test-suites.sh

## test-pg, test-sqlite: the whole suite on one database (PYTEST_ARGS=... passes options)
test-pg:
	@echo "== pytest on PostgreSQL =="
	FAPIAO_TEST_DATABASE_URL=$(PG_TEST_URL) FAPIAO_TEST_REDIS_URL=$(REDIS_TEST_URL) \
		$(PY) -m pytest $(PYTEST_ARGS)

test-sqlite:
	@echo "== pytest on SQLite =="
	FAPIAO_TEST_DATABASE_URL=sqlite FAPIAO_TEST_REDIS_URL=$(REDIS_TEST_URL_SQLITE) \
		$(PY) -m pytest $(PYTEST_ARGS)

## bench: throughput, ingestion, latency, scale, chaos (quick) and fuzz, each on its own private
##        PostgreSQL/Redis; figures and how to read them in docs/PERFORMANCE.md, docs/RELIABILITY.md
BENCH_ARGS ?=
bench: install
	$(PY) -m bench.simulator_push --seconds 5
	$(PY) -m bench.throughput $(BENCH_ARGS)
	$(PY) -m bench.ingest $(BENCH_ARGS)
	$(PY) -m bench.latency
	$(PY) -m bench.scale $(BENCH_ARGS)
	$(PY) -m bench.chaos --quick
	$(PY) -m bench.fuzz --examples 500

## bench-full: the 5,000-document chaos run and 2,000 fuzz examples per lane (about 10 minutes)
bench-full: install
	$(PY) -m bench.chaos
	$(PY) -m bench.fuzz --examples 2000

## lint: ruff (style, imports, bugs) and mypy (strict types)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) $(PROD_VENV) .tools .pytest_cache .mypy_cache .ruff_cache .hypothesis \
		$(TEST_LOG_DIR)
