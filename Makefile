# lastseen: `make run` starts the service on an embedded PostgreSQL, `make test` checks it all.
# Both create .venv and install what they need; nothing else is required.

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp
SOURCES := pyproject.toml setup.py $(wildcard core/*.pyx core/*.pxd ingest/*.pyx ingest/*.pxd)

.PHONY: run test test-faults lint typecheck pytest bench bench-smoke install clean screenshots \
	system-deps test-pythons checks

# The editable install's build says "Editable installation... be careful with folders
# named like the package": it is this repository, on purpose; the note is not shown.
QUIET_BUILD := PYTHONWARNINGS="ignore:Editable installation"

# With the embedded PostgreSQL (the `embedded` extra) where a wheel exists for this
# machine; elsewhere without it, said once: lastseen then uses a PostgreSQL found on the
# machine or LASTSEEN_DATABASE_URL (core/pg.py).
NO_WHEEL = echo "lastseen: no embedded PostgreSQL wheel for this machine; installing without it: lastseen will use a PostgreSQL on it (apt-get install postgresql) or LASTSEEN_DATABASE_URL"

# The test tools (and the runtime) for `make test`; `make run` needs the runtime only.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[test,embedded]' \
		|| { $(NO_WHEEL); $(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[test]'; }
	touch $(STAMP) $(RUN_STAMP)

$(RUN_STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e '.[embedded]' \
		|| { $(NO_WHEEL); $(QUIET_BUILD) $(BIN)/python -m pip install --quiet -e .; }
	touch $(RUN_STAMP)

# The API docs' TypeScript snippet is compiled with tsc in the tests.
SNIPPETS_STAMP := tests/snippets/node_modules/.installed-stamp
$(SNIPPETS_STAMP): tests/snippets/package.json tests/snippets/package-lock.json
	cd tests/snippets && npm ci --no-audit --no-fund --loglevel=error
	touch $(SNIPPETS_STAMP)

install: $(STAMP) $(SNIPPETS_STAMP)

# `make run ARGS="--ingest-procs 2"`: ARGS go to `lastseen serve`.
run: $(RUN_STAMP)
	$(BIN)/lastseen serve $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP) $(SNIPPETS_STAMP)
	$(BIN)/python -m tests.parallel

# wrk, nginx, Node.js, npm, curl and Chromium: installed if missing (apt-get), or named.
system-deps:
	@.ci/system-deps

# The real-time tests and the benchmarks' smoke run (both mostly waiting) from the start;
# beside them lint and types, then the computing tests (tests/parallel.py).
test: system-deps $(STAMP) $(SNIPPETS_STAMP)
	@$(BIN)/python -m tests.parallel --before "$(MAKE) --no-print-directory checks" \
		--beside "$(MAKE) --no-print-directory bench-smoke"

checks: lint typecheck

# The fault and security suite at full length (60 s outages, 100,000 monitors, 1,000,000
# fuzzed requests, 200 worker kills, 500 schemathesis examples per route), and the slow
# tests (blindness end to end in real time, the packages built); `make test` runs the
# fault and security tests in their short versions.
test-faults: system-deps $(STAMP) $(SNIPPETS_STAMP)
	LASTSEEN_SLOW=1 $(BIN)/python -m pytest -q -s -m "faults or security or slow"

# The same on other interpreters (PYTHONS="python3.12 python3.13", each its own venv).
test-pythons:
	@.ci/pythons

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.run --smoke --out var/bench-smoke.json

# The README's screenshots (docs/img/), from the browser tests.
screenshots: $(STAMP)
	LASTSEEN_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/pages -k "status_page or dashboard"

clean:
	rm -rf build $(VENV) .venv-* core/*.c core/*.so ingest/*.c ingest/*.so
