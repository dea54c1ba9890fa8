# NovaPulse — everything is installed by these targets; nothing by hand.
PYTHON ?= python3
TOOLS  := .tools
UV     := $(TOOLS)/bin/uv
VENV   := .venv
BIN    := $(VENV)/bin
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

PYPROJECTS := pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml templates/*/pyproject.toml)

.PHONY: install deploy-tools browser-tools console-screenshots run test test-cluster lint format typecheck bench bench-bus bench-auth bench-webhooks bench-workflow bench-report bench-scale bench-notification clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==0.13.9

$(VENV)/.synced: uv.lock $(PYPROJECTS) | $(UV)
	$(UV) sync --all-packages --all-groups --locked
	touch $@

install: $(VENV)/.synced

run: install deploy-tools
	$(BIN)/python -m novapulse_devkit.stack

# promtool and nginx for tests/deploy and make run's gateway (Debian packages); installed when missing and we
# are root. Never fails: without them make run opens the console directly and their deploy tests skip.
deploy-tools:
	@if command -v promtool >/dev/null && { command -v nginx >/dev/null || test -x /usr/sbin/nginx; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus nginx; } \
	  || echo "could not install promtool/nginx: make run starts without its gateway, their deploy tests skip"; \
	else echo "promtool/nginx missing and not root: make run starts without its gateway, their deploy tests skip"; fi

# Debian's chromium and axe-core (npm, locked) for the console's browser tests; chromium installed when
# missing and we are root, axe-core whenever npm is there. Never fails: without chromium the browser tests
# skip (saying why), without axe-core their accessibility checks do.
BROWSER_DIR := services/console/tests/browser
browser-tools:
	@if command -v chromium >/dev/null || test -x /usr/bin/chromium; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    -o DPkg::Lock::Timeout=600 chromium fonts-dejavu-core; } \
	  || echo "could not install chromium: the console's browser tests will skip"; \
	else echo "chromium missing and not root: the console's browser tests will skip"; fi
	@if [ -f $(BROWSER_DIR)/node_modules/.package-lock.json ] && \
	  [ ! $(BROWSER_DIR)/package-lock.json -nt $(BROWSER_DIR)/node_modules/.package-lock.json ]; then :; \
	elif command -v npm >/dev/null; then \
	  (cd $(BROWSER_DIR) && npm ci --no-audit --no-fund --loglevel=error) \
	  || echo "could not install axe-core: the console's accessibility checks will skip"; \
	else echo "npm missing: the console's accessibility checks will skip"; fi

test: install deploy-tools browser-tools lint
	$(BIN)/pytest

# The bus suite with the session's Redis a real 3-primary Redis Cluster on loopback (not part of `make test`).
test-cluster: install
	NOVAPULSE_TEST_REDIS=cluster $(BIN)/pytest tests/bus -q

# PNGs of the console's pages into docs/console/ (the browser tests, with CONSOLE_SCREENSHOTS=1).
console-screenshots: install browser-tools
	CONSOLE_SCREENSHOTS=1 $(BIN)/pytest services/console/tests -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy libs tests bench $(wildcard services/*/src) $(wildcard templates/*/src)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bench-bus bench-auth bench-webhooks bench-workflow bench-report bench-notification

bench-bus: install
	$(BIN)/python -m bench.bus

bench-auth: install
	$(BIN)/python -m bench.auth

bench-webhooks: install
	$(BIN)/python -m bench.webhooks

bench-workflow: install
	$(BIN)/python -m bench.workflow

bench-report: install
	$(BIN)/python -m bench.report

bench-notification: install
	$(BIN)/python -m bench.notification

# nginx + N api / M worker processes per service under a mixed load, 1x1 then 2x2 (not part of make bench:
# ~4 minutes; needs nginx, see deploy-tools). SCALE_BENCH_SECONDS, SCALE_BENCH_CONCURRENCY, SCALE_BENCH_SHAPES.
bench-scale: install
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) $(TOOLS) .mypy_cache .ruff_cache
