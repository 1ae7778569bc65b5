# Two commands do everything: `make demo` and `make test`.
# Both set up what they need first (apt packages when root, a virtualenv, the
# Python dependencies), so they work on a fresh Debian/Ubuntu machine.

VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.pgresilience-installed
# Server binaries of other PostgreSQL versions (npm builds), for test-matrix.
PG_CACHE ?= .cache/pg
MATRIX ?= 14 16 17 18
# pytest workers (pytest-xdist), each with its own embedded server: the CI
# machine's two cores. 0 runs the suite in one process (needed with
# PGRESILIENCE_TEST_DSN, whose one server the workers would share).
PYTEST_WORKERS ?= 2

.PHONY: setup test test-matrix lint pytest fuzz demo bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh
	touch $@

## make test: lint (sqlfluff, ruff, mypy) then the whole pytest suite against real PostgreSQL
test: setup lint pytest

lint: setup
	$(BIN)/sqlfluff lint sql alembic/versions --dialect postgres --processes 2 --disable-progress-bar
	$(BIN)/ruff check python_client tests bench alembic plpython scripts
	$(BIN)/ruff format --check python_client tests bench alembic plpython scripts
	$(BIN)/mypy
	$(BIN)/python scripts/generate.py --check

# --durations: the slowest tests in CI's log (make test has a 15-minute budget).
pytest: setup
	$(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --durations=30 $(PYTEST_ARGS)

## make test-matrix: the suite on PostgreSQL 14, 16, 17 and 18 (binaries installed into
## $(PG_CACHE) on first use; no PL/Python there, so the client-side diff runs). make test is 15's.
test-matrix: setup
	VENV=$(VENV) PG_CACHE=$(PG_CACHE) PYTEST_WORKERS=$(PYTEST_WORKERS) PYTEST_ARGS="$(PYTEST_ARGS)" \
		bash scripts/test-matrix.sh $(MATRIX)

## make fuzz: the oracle test with many more examples, shrinking failures
## (ORACLE_EXAMPLES=n to choose how many; ORACLE_TAME=1 for plain names and types)
fuzz: setup
	ORACLE_EXAMPLES=$${ORACLE_EXAMPLES:-400} ORACLE_SHRINK=1 $(BIN)/pytest -p no:cacheprovider \
		tests/transactions/test_oracle.py --timeout 3600 $(PYTEST_ARGS)

## make demo: runs every scenario on a throwaway embedded PostgreSQL
demo: setup
	$(BIN)/pgresilience demo

## make bench: every benchmark, printing ratios measured side by side
bench: setup
	for b in bench/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
