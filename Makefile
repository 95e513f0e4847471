# The two commands of the README, and a few helpers. Needs only Python 3.11+ (with venv).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test lint example record-examples bench clean

# The server with its dev tools (embedded PostgreSQL, Stripe emulator, test tools) and the
# client, a distribution of its own in client/ (`pip install ./client` installs it alone).
$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Tollgate needs Python 3.11 or newer (found: $$($(PYTHON) --version))."; exit 1; }
	@$(PYTHON) -m venv $(VENV) || \
		{ echo "Could not create a virtualenv. On Debian/Ubuntu: apt-get install python3-venv"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./client -e '.[dev]'
	@touch $(STAMP)

## Run Tollgate locally: embedded PostgreSQL, Stripe emulator, API on :8000. Keys, ports and
## the webhook secret are kept in .tollgate across restarts; in another shell,
## `source .tollgate/dev.env` and put .venv/bin on PATH (README, "Two commands").
dev: $(STAMP)
	$(BIN)/tollgate dev

## Lint, type-check and run every test (pytest + pgTAP) against a real PostgreSQL; then the
## HTTP tests once more with the API behind a PgBouncer in transaction pooling mode.
test: $(STAMP) lint
	$(BIN)/pytest
	$(MAKE) --no-print-directory test-pgbouncer

# The tests whose API talks to PostgreSQL the most (payments, Stripe webhooks and the applier,
# authorize and holds, transactions, transfers, MCP), about 2.5 minutes: every API
# they start goes through a PgBouncer (pool_mode = transaction) the session starts, as the
# API's own login, with LISTEN direct (tests/conftest.py; docs/OPERATIONS.md, "Behind
# PgBouncer"). tests/test_pgbouncer.py, in the first run, proves PgBouncer is in the path.
# The pgTAP files, which call the SQL API, go through it too (fixture sql_dsn).
PGBOUNCER_TESTS := tests/test_webhooks.py tests/test_payments.py tests/test_gating.py \
	tests/test_transactions.py tests/test_ledger.py tests/test_mcp.py \
	tests/test_refunds.py tests/test_reviews.py tests/test_health.py \
	tests/test_transfer_batches.py tests/test_pgtap.py
.PHONY: test-pgbouncer
test-pgbouncer: $(STAMP)
	TOLLGATE_TEST_PGBOUNCER=1 $(BIN)/pytest $(PGBOUNCER_TESTS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/sqlfluff lint db/sql db/queries.sql migrations examples/sql

## The example agent (examples/paid_action.py), against a running `make dev`.
example: $(STAMP)
	$(BIN)/python examples/paid_action.py

## README's SQL examples (examples/sql/*.sql): run them on a fresh database and record their
## output in *.sql.out, which the tests compare (tests/test_sql_examples.py). Review the diff.
record-examples: $(STAMP)
	UPDATE_EXAMPLES=1 $(BIN)/pytest -q tests/test_sql_examples.py

## Benchmarks (not part of the tests): results in bench/results/.
bench: $(STAMP)
	@command -v wrk >/dev/null || apt-get install -y -qq wrk >/dev/null || \
		{ echo "bench needs wrk: apt-get install wrk"; exit 1; }
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || $(BIN)/pip install --quiet -e ./client -e '.[dev,bench]'
	$(BIN)/python -m bench.run --scale $(or $(SCALE),1) $(if $(PROFILE),--profile)

clean:
	rm -rf $(VENV) .tollgate

## The failover test: etcd and a two-node Patroni cluster (installed by the test when missing),
## the primary killed under load (tests/ha/test_failover.py). Prints what the failover cost.
test-ha: $(STAMP)
	$(BIN)/pytest -m ha -s tests/ha --basetemp=$(or $(BASETEMP),/tmp/pt-ha)
