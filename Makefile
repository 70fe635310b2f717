# Sesame: `make run` starts a demo on a fresh machine; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench lint install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## migrate, seed the demo and serve on http://127.0.0.1:8000
	SESAME_ENV=$${SESAME_ENV:-development} $(BIN)/sesame db upgrade
	SESAME_ENV=$${SESAME_ENV:-development} $(BIN)/sesame demo
	SESAME_ENV=$${SESAME_ENV:-development} exec $(BIN)/sesame serve --simulate var/demo-devices.json

test: $(STAMP)  ## the whole suite, on SQLite and on PostgreSQL
	$(BIN)/pytest -n auto $(PYTEST_ARGS)

bench: $(STAMP)  ## load figures (needs wrk, mosquitto: apt-get install wrk mosquitto)
	$(BIN)/python bench/api_throughput.py
	$(BIN)/python bench/command_rtt.py
	$(BIN)/python bench/event_ingest.py
	$(BIN)/python bench/device_fleet.py
	$(BIN)/python bench/credential_verify.py
	$(BIN)/python bench/ledger.py
	$(BIN)/python bench/scheduler.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
