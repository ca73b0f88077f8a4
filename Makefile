# micropacs: `make run` starts a complete PACS, `make test` runs every test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./data

.PHONY: run test lint typecheck bench fuzz install install-test dcmtk chromium htmx screenshots clean stack stack-up stack-down run-stack

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps in the venv: reinstall only when pyproject.toml changed or the venv is new.
INSTALLED := $(VENV)/.installed
INSTALLED_TEST := $(VENV)/.installed-test

install: $(INSTALLED) htmx

$(INSTALLED): pyproject.toml $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

install-test: $(INSTALLED_TEST) dcmtk chromium htmx

# The test extra installs the package too, so it stamps both.
$(INSTALLED_TEST): pyproject.toml $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(INSTALLED)

# DCMTK (storescu, findscu, getscu, movescu, storescp) is the DICOM peer of the tests.
dcmtk:
	@command -v storescu >/dev/null 2>&1 || { \
	  echo "installing DCMTK with apt-get"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) \
	    apt-get install -y -qq --no-install-recommends dcmtk >/dev/null; }

# Chromium (Debian's package) is the browser of the web UI's tests (tests/browser/).
chromium:
	@command -v /usr/bin/chromium >/dev/null 2>&1 || { \
	  echo "installing Chromium with apt-get"; \
	  $(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(if $(filter 0,$(shell id -u)),,sudo) \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# htmx for the admin web UI, from the npm registry at the version and sha512 pinned in the
# script, into the git-ignored services/admin/web/static/vendor/ (docs/admin-ui.md).
htmx:
	bash tools/htmx/install.sh

# The web UI's screenshots in docs/screenshots/, taken by the browser test (docs/admin-ui.md).
screenshots: install-test
	MICROPACS_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(BIN)/pytest -q tests/browser

run: install
	$(BIN)/micropacs serve --data-dir $(DATA_DIR) --host 127.0.0.1 \
	  --dicom-port 11112 --ae-title MICROPACS --http-port 8080

lint: install-test
	$(BIN)/ruff check micropacs services tests bench stack
	$(BIN)/ruff format --check micropacs services tests bench stack

typecheck: install-test
	$(BIN)/mypy

test: install-test stack
	$(BIN)/ruff check micropacs services tests bench stack
	$(BIN)/ruff format --check micropacs services tests bench stack
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest
	$(BIN)/pytest --backend stack tests/contract tests/integration

bench: install-test
	$(BIN)/python -m bench

# The long fuzzing run (docs/security.md, "Fuzzing"): FUZZ_EXAMPLES inputs per unit of each
# target's weight, about 1,000,000 in all; hypothesis keeps its files in a temporary folder.
FUZZ_EXAMPLES ?= 62000
fuzz: install-test
	@store=$$(mktemp -d); trap 'rm -rf "$$store"' EXIT; \
	MICROPACS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) HYPOTHESIS_STORAGE_DIRECTORY="$$store" \
	  $(BIN)/pytest tests/fuzz --hypothesis-profile=long -p no:cacheprovider --timeout=7200 -q

# The hospital deployment's servers (Kafka, MinIO, FerretDB, Prometheus), built into ~/.cache.
stack:
	bash stack/install.sh

stack-up: install stack
	$(BIN)/python -m stack.servers up

stack-down: install
	$(BIN)/python -m stack.servers down

run-stack: install stack
	$(BIN)/python -m stack.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
