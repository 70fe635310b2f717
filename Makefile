# Sesame: `make run` starts a demo on a fresh machine; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench bench-tools lint install clean

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

BENCHES     := api_throughput command_rtt event_ingest device_fleet credential_verify \
               ledger scheduler push_fanout
BENCH_TOOLS := wrk mosquitto

bench: $(STAMP) bench-tools  ## load figures: every bench/*.py, each ending with one JSON line
	@failed=""; for name in $(BENCHES); do \
	    echo "== bench/$$name.py"; \
	    $(BIN)/python bench/$$name.py || failed="$$failed $$name"; \
	done; \
	if [ -n "$$failed" ]; then echo "benches that failed:$$failed" >&2; exit 1; fi

# The load generators and the broker the benches drive: installed with apt-get when we
# are root and have it, otherwise named with the command that installs them.
bench-tools:
	@missing=""; for tool in $(BENCH_TOOLS); do \
	    PATH="$$PATH:/usr/sbin:/sbin" command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq$$missing; \
	else \
	    echo "make bench needs$$missing: sudo apt-get install -y$$missing" >&2; exit 1; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
