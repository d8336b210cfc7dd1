# dicomflow: the commands a newcomer types. Everything sets itself up from a fresh clone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PYTHON := $(BIN)/python
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
PEERS := storescp storescu findscu movescu getscu dcmsend Orthanc dciodvfy chromium
OHIF_STAMP := viewer/.ohif/3.13.2/.complete
# The local stack's addresses; the viewer site is built for them.
HTTP_PORT ?= 7071
FABRIC_PORT ?= 7072
VIEWER_PORT ?= 3000
VIEWER_SITE := viewer/site
STACK := --http-port $(HTTP_PORT) --fabric-port $(FABRIC_PORT) --static $(VIEWER_SITE) --static-port $(VIEWER_PORT)

.PHONY: setup peers infra-tools test test-unit lint up down demo bench clean viewer dr-drill

setup: $(STAMP) $(NPM_STAMP) $(OHIF_STAMP)

# uv installs the pinned requirements (same versions pip resolves) in ~5 s where pip took 34 s with a warm
# cache: it downloads and unpacks in parallel. pip only installs uv itself (pinned). Bytecode is written on
# first import for what is imported (uv's default, as pip's --no-compile), not for every module of
# scipy/onnxruntime/... at install time.
UV_VERSION := 0.13.10
UV_INSTALL = $(1)/bin/python -m pip install --quiet --no-compile uv==$(UV_VERSION) && \
	$(1)/bin/uv pip install --quiet --python $(1)/bin/python -r $(2)

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(call UV_INSTALL,$(VENV),requirements-dev.txt)
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	@touch $@

# The prebuilt OHIF viewer (npm pack @ohif/app, integrity-checked; see viewer/ohif.py).
$(OHIF_STAMP): viewer/ohif.py | $(STAMP)
	$(PYTHON) -m viewer fetch

# The local viewer site: OHIF + an app-config.js for the local stack (sign-in at the devhost's issuer).
viewer: setup
	$(PYTHON) -m viewer build --dicomweb http://127.0.0.1:$(HTTP_PORT)/api/dicomweb \
	  --authority http://127.0.0.1:$(FABRIC_PORT)/issuer --client-id dicomflow-viewer --out $(VIEWER_SITE)

# Real DICOM peers for tests (dcmtk, Orthanc + DICOMweb plugin, dicom3tools) and the browser for the viewer
# test (chromium, driven by Playwright; CJK fonts so names render) from Debian.
peers:
	@missing=""; for b in $(PEERS); do command -v $$b >/dev/null 2>&1 || missing="$$missing $$b"; done; \
	test -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so || missing="$$missing orthanc-dicomweb"; \
	test -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "Installing test peers (missing:$$missing)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq \
	    dcmtk orthanc orthanc-dicomweb dicom3tools chromium fonts-noto-cjk >/dev/null; \
	fi

# checkov for the offline Bicep checks (tests/infra), in its own venv: its pins fight the app's.
INFRA_VENV := .venv-infra
INFRA_STAMP := $(INFRA_VENV)/.installed
infra-tools: $(INFRA_STAMP)

$(INFRA_STAMP): tests/infra/requirements-infra.txt
	@test -x $(INFRA_VENV)/bin/python || $(PY) -m venv $(INFRA_VENV)
	$(call UV_INSTALL,$(INFRA_VENV),tests/infra/requirements-infra.txt)
	@touch $@

# Three workers, one test module per worker at a time (module-scoped stacks stay whole): most e2e time is
# waiting on servers (two workers kept 2 cores 70% busy), so three modules side by side fit the 2-core machines
# this runs on. Modules start in collection order (tests/conftest.py puts the long end-to-end ones first), not
# xdist's default of the modules with the most tests first, which left the long ones for the end.
TEST_WORKERS ?= 3
test: setup peers infra-tools
	$(PYTHON) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15

test-unit: setup
	$(PYTHON) -m pytest -q tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

# The app's settings, as Core Tools users keep them: local.settings.json (git-ignored), made from the example
# (sign-in against the devhost's development issuer, CORS for the viewer's origin).
local.settings.json:
	cp local.settings.example.json $@

up: viewer local.settings.json
	$(PYTHON) -m devhost up --detach --events infra/events.json --ready-path /api/health $(STACK)
	@echo "Viewer: http://127.0.0.1:$(VIEWER_PORT)/  (sign in on the development issuer's page; API tokens: \
	$(PYTHON) -m devhost token --role reader)"
	DicomStorage=UseDevelopmentStorage=true $(PYTHON) -m gateway up

down: setup
	-$(PYTHON) -m gateway down
	$(PYTHON) -m devhost down

demo: viewer local.settings.json
	$(PYTHON) -m tools demo

bench: setup peers
	$(PYTHON) -m bench

# The disaster-recovery drill (issue 13): two local regions (Azurite + devhost each), emulated object
# replication, the primary lost and brought back; one summary line at the end (python -m tools drill --help).
dr-drill: setup
	$(PYTHON) -m tools drill

# down first: a stack still running (or left by a host that was killed) must not lose its data folder.
clean:
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m gateway down; $(PYTHON) -m devhost down; fi
	rm -rf .azurite .devhost .pytest_cache .mypy_cache .ruff_cache $(VIEWER_SITE) test-artifacts
