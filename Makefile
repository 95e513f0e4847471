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

## Lint, type-check and run every test (pytest + pgTAP) against a real PostgreSQL.
test: $(STAMP) lint
	$(BIN)/pytest

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
