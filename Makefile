# dicomflow: the commands a newcomer types. Everything sets itself up from a fresh clone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
PEERS := storescp storescu findscu movescu getscu dcmsend Orthanc dciodvfy

.PHONY: setup peers infra-tools test test-unit lint up down demo bench clean

setup: $(STAMP) $(NPM_STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -r requirements-dev.txt
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

# Real DICOM peers for tests (dcmtk, Orthanc + DICOMweb plugin, dicom3tools) from Debian.
peers:
	@missing=""; for b in $(PEERS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || missing="$$missing orthanc-dicomweb"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing test peers (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    dcmtk orthanc orthanc-dicomweb dicom3tools >/dev/null; \
	fi

# checkov for the offline Bicep checks (tests/infra), in its own venv: its pins fight the app's.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
infra-tools: $(INFRA_STAMP)

$(INFRA_STAMP): tests/infra/requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PY) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(INFRA_VENV)/bin/python -m pip install --quiet -r tests/infra/requirements-infra.txt
	@touch $@

test: setup peers infra-tools
	$(PYTHON) -m pytest -q

test-unit: setup
	$(PYTHON) -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The local stack, then the DIMSE gateway on 127.0.0.1:11112 against its Azurite (devhost's default ports).
up: setup
	$(PYTHON) -m devhost up --detach --env DICOMFLOW_STABLE_AGE_SECONDS=5
	DicomStorage=UseDevelopmentStorage=true $(PYTHON) -m gateway up

down: setup
	-$(PYTHON) -m gateway down
	$(PYTHON) -m devhost down

demo: setup
	$(PYTHON) -m devhost demo

bench: setup peers
	$(PYTHON) -m bench

clean:
	rm -rf .azurite .devhost .pytest_cache .mypy_cache .ruff_cache
