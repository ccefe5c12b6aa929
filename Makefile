# Junction: everything a newcomer runs. `make run` and `make test` work on a bare machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The contract check's TypeScript tools (openapi-typescript, tsc), from their lock file.
TS_DIR := tests/contract/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed
# The admin console's browser libraries (htmx, uPlot), pinned in their lock file; `make vendor`
# copies their release files into the package (app/admin/static/vendor), which ships them.
VENDOR_DIR := tools/admin-vendor
VENDOR_OUT := app/admin/static/vendor
# The console's browser tests drive Debian's Chromium, never a browser Playwright downloads.
CHROMIUM ?= /usr/bin/chromium
HOST ?= 127.0.0.1
PORT ?= 8000
TEST_PG_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# Exact versions with hashes, compiled from pyproject.toml by `make lock`: what the venv, CI and
# the Docker image install (the runtime lock alone in the image).
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11

# apt-get install, as root or through sudo, refreshing the package lists once if it fails.
apt_install = { apt-get install -y -qq $(1) >/dev/null 2>&1 || sudo -n apt-get install -y -qq $(1) >/dev/null 2>&1 || \
  { (apt-get update -qq || sudo -n apt-get update -qq) >/dev/null 2>&1 && \
    (apt-get install -y -qq $(1) || sudo -n apt-get install -y -qq $(1)) >/dev/null 2>&1; }; }

.PHONY: install lock run test test-sqlite test-postgres pgbouncer chromium vendor lint format bench bench-faults token \
        db-upgrade db-downgrade db-current db-history db-revision clean

$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	@command -v npm >/dev/null 2>&1 || $(call apt_install,nodejs npm) || \
	  echo "npm could not be installed: the TypeScript contract test will fail (apt-get install -y nodejs npm)"
	cd $(TS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(TS_STAMP)

# After a change to the dependencies in pyproject.toml: both locks, then `make install`.
lock: $(STAMP)
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --extra dev -o $(DEV_LOCK)

var:
	mkdir -p var

run: $(STAMP) var
	$(BIN)/junction migrate
	$(BIN)/junction serve --host $(HOST) --port $(PORT)

# The whole suite twice: embedded SQLite + in-process cache, then PostgreSQL + Redis.
test: test-sqlite test-postgres

test-sqlite: $(STAMP) $(TS_STAMP) chromium
	JUNCTION_TEST_BACKEND=sqlite $(BIN)/pytest $(ARGS)

test-postgres: $(STAMP) $(TS_STAMP) pgbouncer chromium
	JUNCTION_TEST_BACKEND=postgres JUNCTION_TEST_PG_URL=$(TEST_PG_URL) \
	JUNCTION_TEST_REDIS_URL=$(TEST_REDIS_URL) $(BIN)/pytest $(ARGS)

# The PgBouncer test (tests/core/test_pgbouncer.py) starts a PgBouncer of its own: the Debian
# package, installed here when it is missing (as root, or with sudo). If it cannot be, the test
# fails and says so.
pgbouncer:
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || \
	  $(call apt_install,pgbouncer) || \
	  echo "pgbouncer could not be installed: the PgBouncer test will fail (apt-get install -y pgbouncer)"

# The admin console's browser tests (tests/admin) launch Debian's Chromium by its path; installed
# here when it is missing. If it cannot be, those tests fail and say so.
chromium:
	@test -x $(CHROMIUM) || $(call apt_install,chromium) || \
	  echo "chromium could not be installed: the console's browser tests will fail (apt-get install -y chromium)"

# Refresh the vendored htmx and uPlot from their pinned npm releases (after editing
# $(VENDOR_DIR)/package.json: `npm install` there rewrites the lock, without registry URLs).
vendor:
	cd $(VENDOR_DIR) && npm ci --no-audit --no-fund --loglevel=error
	mkdir -p $(VENDOR_OUT)
	cp $(VENDOR_DIR)/node_modules/htmx.org/dist/htmx.min.js $(VENDOR_OUT)/htmx.min.js
	cp $(VENDOR_DIR)/node_modules/uplot/dist/uPlot.iife.min.js $(VENDOR_OUT)/uPlot.iife.min.js
	cp $(VENDOR_DIR)/node_modules/uplot/dist/uPlot.min.css $(VENDOR_OUT)/uPlot.min.css
	cp $(VENDOR_DIR)/node_modules/htmx.org/LICENSE $(VENDOR_OUT)/htmx.LICENSE
	cp $(VENDOR_DIR)/node_modules/uplot/LICENSE $(VENDOR_OUT)/uPlot.LICENSE

lint: $(STAMP)
	$(BIN)/ruff check app tests bench alembic
	$(BIN)/ruff format --check app tests bench alembic
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format app tests bench alembic
	$(BIN)/ruff check --fix app tests bench alembic

# Figures, not tests: ratios against a bare endpoint measured in the same run.
bench: $(STAMP)
	@command -v wrk >/dev/null 2>&1 || (apt-get install -y -qq wrk >/dev/null 2>&1 || sudo apt-get install -y -qq wrk >/dev/null 2>&1) || echo "wrk unavailable: using the Python load generator"
	$(BIN)/python -m bench $(ARGS)

# Two replicas under load while Redis is killed and stalled and PostgreSQL restarts (servers of
# its own): requests, non-2xx by status, stale reads, lost acknowledged writes.
bench-faults: $(STAMP)
	$(BIN)/python -m bench.faults $(ARGS)

token: $(STAMP)
	$(BIN)/junction token --tenant $(or $(tenant),demo) --role $(or $(role),service)

db-upgrade: $(STAMP) var
	$(BIN)/alembic upgrade head

db-downgrade: $(STAMP)
	$(BIN)/alembic downgrade -1

db-current: $(STAMP)
	$(BIN)/alembic current

db-history: $(STAMP)
	$(BIN)/alembic history --verbose

db-revision: $(STAMP)
	@test -n "$(m)" || (echo 'usage: make db-revision m="message"' && exit 2)
	$(BIN)/alembic revision --autogenerate -m "$(m)"

clean:
	rm -rf $(VENV) var/*.db .pytest_cache .mypy_cache .ruff_cache
