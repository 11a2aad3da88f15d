# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[dev]"
	rm -f $(VENV)/.installed-*
	touch $@

# Logs a person reads (each SMS the console gateway "sends" is one line); KENGELE_LOG_FORMAT=json make run
# for JSON. The demo network is loaded into an empty roster only, and never by `kengele serve`; with a
# gateway that texts phones (KENGELE_GATEWAY) it is not loaded, and the server starts all the same.
run: export KENGELE_LOG_FORMAT ?= text
run: $(STAMP)
	$(BIN)/kengele db upgrade
	$(BIN)/kengele gazetteer import --builtin --if-empty
	$(BIN)/kengele demo load --if-empty
	$(BIN)/kengele serve --host 127.0.0.1 --port 8000

# The quick tests on every core (pytest-xdist; an idle worker takes tests from a busy one, so a
# long test near the end keeps no core waiting), then the slow ones alone: they time what real
# server processes do, or kill them, and a busy neighbour would skew the clock they read.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy app gateways keywords
	$(BIN)/pytest -q -n auto --dist worksteal -m "not slow and not fault_long"
	$(BIN)/pytest -q -m "slow and not fault_long"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app gateways keywords

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache kengele.db kengele.db-wal kengele.db-shm
