# Sesame: `make run` starts a demo on a fresh machine; `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# `make run` installs what serving needs (requirements/serve.txt); `make test`, `lint` and
# `bench` add the test and lint tools (requirements/dev.txt). Both lock files pin every
# package, transitive ones included, with hashes; `make lock` writes them from pyproject.toml.
SERVE  := $(VENV)/.installed-serve
DEV    := $(VENV)/.installed-dev
# No byte-compiling of every module at install: Python compiles what it imports, when
# it first does (a quarter less work before the first start).
PIP    := $(BIN)/python -m pip install --quiet --disable-pip-version-check --no-compile
# The package itself: its dependencies come from the lock, its build backend too.
SELF   := $(PIP) --no-deps --no-build-isolation -e .

.PHONY: run test bench bench-tools lint install lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall whenever a lock file or the package's declaration changes.
$(SERVE): requirements/serve.txt pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements/serve.txt
	$(SELF)
	touch $@

# dev.txt holds every pin of serve.txt, so it also satisfies `make run`.
$(DEV): requirements/dev.txt requirements/serve.txt pyproject.toml | $(BIN)/python
	$(PIP) --require-hashes -r requirements/dev.txt
	$(SELF)
	touch $@ $(SERVE)

install: $(DEV)

run: $(SERVE)  ## migrate, seed the demo and serve on http://127.0.0.1:$${SESAME_PORT:-8000}
	SESAME_ENV=$${SESAME_ENV:-development} $(BIN)/sesame db upgrade
	SESAME_ENV=$${SESAME_ENV:-development} $(BIN)/sesame demo
	SESAME_ENV=$${SESAME_ENV:-development} exec $(BIN)/sesame serve --simulate var/demo-devices.json

test: lint  ## lint and types, then the whole suite, on SQLite and on PostgreSQL
	$(BIN)/pytest -n auto --dist worksteal $(PYTEST_ARGS)

# Regenerate both lock files from pyproject.toml (needs the network): dev.txt first, then
# serve.txt within it, so the packages they share have the same pins. Pins already in
# the files stay unless asked: `make lock LOCK_ARGS=--upgrade` (or --upgrade-package NAME).
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
        --custom-compile-command "make lock" $(LOCK_ARGS)
# The build backend, and what it needs for an editable install, are locked too.
BUILD_REQUIRES := $(BIN)/python -c 'import tomllib; \
        print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'; \
        echo editables

# amqtt asks for pwdlib[argon2]: the pin carries the extra, or the pip that a new venv
# brings (23.2) looks past the pinned version for that requirement and refuses the install.
lock: $(DEV)
	($(BUILD_REQUIRES)) | $(LOCK) pyproject.toml - --extra dev -o requirements/dev.txt
	($(BUILD_REQUIRES)) | $(LOCK) pyproject.toml - -c requirements/dev.txt -o requirements/serve.txt
	sed -i 's/^pwdlib==/pwdlib[argon2]==/' requirements/dev.txt requirements/serve.txt

BENCHES     := api_throughput command_rtt event_ingest device_fleet credential_verify \
               ledger scheduler push_fanout
BENCH_TOOLS := wrk mosquitto

bench: $(DEV) bench-tools  ## load figures: every bench/*.py, each ending with one JSON line
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

lint: $(DEV)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache
