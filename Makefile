# OrderFlow developer entry points. A newcomer needs two: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
STAMP  := $(VENV)/.installed

.PHONY: run test lint format lock install clean compose-check

# Install (or refresh) the virtualenv from the lock; re-runs only when the lock changes.
$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## Start the whole local stack (embedded PostgreSQL, Airflow, sandbox) in the foreground.
run: $(STAMP)
	$(BIN)/orderflow run

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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
