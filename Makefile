# OrderFlow developer entry points. A newcomer needs two: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast test-long test-demo deps lint format lock install clean compose-check

# Install (or refresh) the virtualenv from the lock; re-runs only when the lock changes.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# Bytecode for every installed module now, once: a shell with PYTHONDONTWRITEBYTECODE set
	@# (as some tools set it) would otherwise compile Airflow, scikit-learn, SciPy and pandas
	@# from source in every test process (~17 s of CPU of `make test-fast`).
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null || true
	touch $(STAMP)

install: $(STAMP)

## Start the whole local stack (embedded PostgreSQL, Airflow, sandbox) in the foreground.
run: $(STAMP)
	$(BIN)/orderflow run

## Run the test suite (every test but the `long` tier). Checks the prerequisites first
## (tests/prerequisites.py: `make deps` installs them), prints the 25 slowest tests, and
## fails if the run left any process behind (tests/leftovers.py). PYTEST_ARGS="-k …" narrows.
test: $(STAMP)
	@$(BIN)/python tests/prerequisites.py
	$(call pytest_run,-m 'not long' $(PARALLEL) tests/unit tests/dags,ORDERFLOW_TEST_NO_DATABASE=1)
	$(call pytest_run,-m 'not long' $(PARALLEL) --ignore=tests/unit --ignore=tests/dags)

## Unit and DAG tests only, with no database and fewer property-test examples: the loop
## while you edit (under a minute). `make test` runs the same tests in full.
test-fast: $(STAMP)
	$(call pytest_run,-q -m 'not slow and not long' $(PARALLEL) tests/unit tests/dags,ORDERFLOW_TEST_NO_DATABASE=1 ORDERFLOW_TEST_FAST=1)

## The `long` tier: soak, multi-day and recovery tests kept out of `make test` (CI runs both).
test-long: $(STAMP)
	@$(BIN)/python tests/prerequisites.py
	$(call pytest_run,-m 'long and not demo and not stack' $(PARALLEL))
	$(call pytest_run,-m 'long and not demo and stack')

## The first ten minutes of `make run` as a newcomer sees them (every channel invoiced, every
## KPI tile filled), timed on this machine: a measurement, so not part of CI.
test-demo: $(STAMP)
	$(call pytest_run,-m demo -s)

# Tests run on one pytest-xdist worker per core (4 at most), each test module on one worker
# (its module fixtures are built once): the unit/DAG half is CPU-bound, the rest mostly waits
# on subprocesses and PostgreSQL. Each worker has databases of its own and stops only what
# its own tests left (tests/conftest.py); the run's check afterwards covers them all. The
# tests marked `stack` (the whole local stack as `make run` starts it: the soak, the database
# kill) keep the cores to themselves: they run alone, after the rest of the long tier.
PARALLEL := -n auto --maxprocesses 4 --dist loadfile

# pytest under a run name of its own (ORDERFLOW_TEST_RUN, inherited by every process the
# tests start), then the proof that none of them is still running. $(2): environment for pytest.
# A PYTEST_ARGS filter that selects nothing in one half of `make test` is not a failure.
define pytest_run
@run=m$$$$; echo "test run $$run: pytest $(1) --durations=25 $(PYTEST_ARGS)"; \
	ORDERFLOW_TEST_RUN=$$run $(2) $(BIN)/pytest $(1) --durations=25 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc = 5 ] && [ -n "$(PYTEST_ARGS)" ]; then rc=0; fi; \
	$(BIN)/python tests/leftovers.py $$run || rc=1; exit $$rc
endef

## Install the test prerequisites listed in tests/prerequisites.py (Debian packages, apt-get).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
deps:
	@pkgs="$$($(PYTHON) tests/prerequisites.py --packages)"; \
	if [ -n "$$pkgs" ]; then \
	  echo "installing the test prerequisites: $$pkgs"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs >/dev/null 2>&1 \
	  || { $(SUDO) apt-get update -q >/dev/null \
	       && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$pkgs >/dev/null; }; \
	fi
	@$(PYTHON) tests/prerequisites.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## Re-resolve requirements.txt into the pinned lock (the official constraints URL is unreachable).
lock:
	$(BIN)/uv pip compile requirements.txt --python-version 3.11 --custom-compile-command "make lock" -o requirements.lock

compose-check:
	docker compose -f docker-compose.yaml config --quiet

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
