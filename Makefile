# The README names these targets. Everything runs from the project's own virtualenv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HOST    ?= 127.0.0.1
PORT    ?= 8000
WORKERS ?= 1
# Real services for `make test-services` (CI runs both modes).
SERVICES_ENV := DATABASE_URL=postgres://postgres@127.0.0.1:5432/gateway \
	REDIS_URL=redis://127.0.0.1:6379/15 SECRET_KEY=test-only-secret-key-$(shell hostname) \
	CELERY_TASK_ALWAYS_EAGER=1 DEBUG=1
# Every Python process's wall clock 400 days ahead (Redis and PostgreSQL keep theirs).
SHIFTED_ENV := CLOCK_SHIFT_DAYS=400 PYTHONPATH=$(CURDIR)/.ci/clockshift

.PHONY: lock setup run serve demo test test-shifted test-services test-services-shifted test-stock test-ha gateway-db lint worker beat bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

# Every version comes from the lock file (hashes checked), then the project itself, so a
# fresh machine and CI install exactly what the suite last passed with. `make lock` after
# changing a dependency in pyproject.toml (docs/operations.md, "Upgrading dependencies").
LOCK := requirements/dev.lock

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# Re-resolve every dependency (the newest versions pyproject.toml allows) into the lock file.
# pip-tools runs from a venv of its own, so it never enters the lock.
lock:
	test -x .venv-lock/bin/pip-compile || { $(PY) -m venv .venv-lock && .venv-lock/bin/pip install --quiet pip-tools; }
	.venv-lock/bin/pip-compile --quiet --upgrade --extra test --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links -o $(LOCK) pyproject.toml

setup: $(VENV)/.installed
	mkdir -p var
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput -v0
	$(BIN)/python manage.py demosetup --base-url http://$(HOST):$(PORT) > /dev/null

# Set everything up, fill the dashboards with demo traffic (once), and serve the gateway.
run: setup
	test -f var/demo-traffic.done || { $(BIN)/python manage.py demotraffic --requests 300 \
		--backfill-days 30 && touch var/demo-traffic.done; }
	$(BIN)/python manage.py demosetup --base-url http://$(HOST):$(PORT)
	$(MAKE) serve

serve:
	$(BIN)/uvicorn gatewaysite.asgi:application --host $(HOST) --port $(PORT) \
		--workers $(WORKERS) --loop uvloop --http httptools --no-access-log

test: $(VENV)/.installed
	$(BIN)/pytest -q

# The suite with the wall clock moved (see SHIFTED_ENV): no test may depend on the day it
# was written.
test-shifted: $(VENV)/.installed
	$(SHIFTED_ENV) $(BIN)/pytest -q -W ignore::pytest.PytestAssertRewriteWarning

test-services: $(VENV)/.installed gateway-db
	$(SERVICES_ENV) $(BIN)/pytest -q

# The end-to-end tests on the stock handler, redis-py's pipelines and httpx's transport
# (gateway/fastpath/README.md), against the real services: what an upgrade can fall back to.
test-stock: $(VENV)/.installed gateway-db
	$(SERVICES_ENV) GATEWAY_FAST_PATH=0 $(BIN)/pytest -q -m e2e

test-services-shifted: $(VENV)/.installed gateway-db
	$(SERVICES_ENV) $(SHIFTED_ENV) $(BIN)/pytest -q -W ignore::pytest.PytestAssertRewriteWarning

# Redis Sentinel and Redis Cluster (docs/operations.md): the topology tests, which start
# their own redis-server processes, then the budget and gateway tests again with REDIS_URL
# on a 3-primary cluster that tests/run-on-cluster starts and stops (ports 7101-7103).
test-ha: $(VENV)/.installed gateway-db
	$(SERVICES_ENV) $(BIN)/pytest -q tests/reliability/test_sentinel.py \
		tests/reliability/test_redis_cluster.py tests/budgets/test_concurrency.py
	$(SERVICES_ENV) tests/run-on-cluster $(BIN)/pytest -q -m "not slow" tests/budgets tests/gateway

gateway-db:
	psql -h 127.0.0.1 -U postgres -tc "SELECT 1 FROM pg_database WHERE datname='gateway'" | grep -q 1 \
		|| createdb -h 127.0.0.1 -U postgres gateway

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway budgets
	$(BIN)/python manage.py makemigrations --check --dry-run

worker: $(VENV)/.installed
	$(BIN)/celery -A gatewaysite worker --loglevel=INFO

beat: $(VENV)/.installed
	$(BIN)/celery -A gatewaysite beat --loglevel=INFO

bench: $(VENV)/.installed
	bench/run.sh

clean:
	rm -rf $(VENV) .venv-lock db.sqlite3 var staticfiles
