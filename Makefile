# Two commands for a newcomer: `make serve` and `make test`. Everything else is a helper.
#
# Re-runs are quick: each install is recorded by a stamp file in the venv that is keyed on
# pyproject.toml, so pip only runs again when the dependencies change.

SHELL := /bin/bash
# pipefail: a pip failure must not be hidden by the noise filter it is piped into.
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
VARIANT ?= $(or $(EFFICIENTNET_VARIANT),lite0)
MODEL_DIR ?= $(or $(EFFICIENTNET_MODEL_DIR),models)
HOST ?= 0.0.0.0
PORT ?= 8000
PYTEST_ARGS ?=
BENCH_ARGS ?=
SOAK_ARGS ?=

# Files the linters look at; overridable so tests/packaging can point them at broken copies
# and prove that each check fails the build.
RUFF_PATHS ?= .
DOCKERFILE ?= Dockerfile
HADOLINT_CONFIG ?= docker/hadolint.yaml
COMPOSE_FILES ?= docker-compose.yml
COMPOSE_SCHEMA ?= docker/compose-spec.json
K8S_MANIFESTS ?= $(wildcard deploy/k8s/*.yaml)
K8S_VERSION ?= 1.33.0
SHELL_SCRIPTS ?= .ci/run docker/entrypoint.sh docker/export-entrypoint.sh

CHROMIUM ?= /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

BIN := $(VENV)/bin
STAMP_SERVE := $(VENV)/.installed-serve
STAMP_TEST := $(VENV)/.installed-test
GRAPH := $(MODEL_DIR)/efficientnet_$(VARIANT).onnx

# pip here also lists local mirrors; their "Location ... is ignored" lines are harmless noise.
PIP_INSTALL = $(BIN)/python -m pip install --quiet --disable-pip-version-check
PIP_FILTER = 2>&1 | { grep -v -e "is ignored: it is neither a file nor a directory" || true; }

.PHONY: help serve test soak bench lint lint-python lint-shell lint-dockerfile lint-compose lint-k8s ci export \
	install install-test clean clean-models

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

serve: $(STAMP_SERVE) $(GRAPH) ## install, export VARIANT (default lite0) if missing, serve on PORT (8000)
	EFFICIENTNET_VARIANT=$(VARIANT) EFFICIENTNET_MODEL_DIR=$(MODEL_DIR) \
		$(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(STAMP_TEST) | $(CHROMIUM) ## install the test dependencies and run the whole suite
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

export: $(GRAPH) ## export the ONNX graph for VARIANT if it is missing

install: $(STAMP_SERVE) ## create .venv and install the service + exporter
install-test: $(STAMP_TEST) ## create .venv and install everything CI needs

# Order-only on the install: a dependency bump must not force a re-export of an existing graph.
$(MODEL_DIR)/efficientnet_%.onnx: | $(STAMP_SERVE)
	$(BIN)/python -m model_export --variant $* --weights imagenet --output-dir $(MODEL_DIR)

# Debian's python3 ships venv's ensurepip separately (python3-venv); a failed venv is removed so
# a re-run does not find a half-made one.
$(BIN)/python:
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends python3-venv; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

# Editable installs: code edits need no reinstall, only pyproject.toml changes do.
$(STAMP_SERVE): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e './[export]' $(PIP_FILTER)
	touch $@

# The test extras are a superset of the serving ones, so this stamp satisfies both.
$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) -e './[export,test,dev]' $(PIP_FILTER)
	touch $(STAMP_SERVE) $@

# The web page's tests drive Debian's Chromium through Playwright (Playwright's own browser
# download cannot be used here), so `make test` installs it once on a machine without it.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

lint: $(STAMP_TEST) ## every static check CI runs (each one fails on a finding)
	$(MAKE) --no-print-directory lint-python lint-shell lint-dockerfile lint-compose lint-k8s

lint-python:
	$(BIN)/ruff check $(RUFF_PATHS)
	$(BIN)/ruff format --check $(RUFF_PATHS)

lint-shell:
	$(BIN)/shellcheck $(SHELL_SCRIPTS)

lint-dockerfile:
	$(BIN)/hadolint --config $(HADOLINT_CONFIG) $(DOCKERFILE)

lint-compose:
	$(BIN)/check-jsonschema --schemafile $(COMPOSE_SCHEMA) $(COMPOSE_FILES)

# --strict rejects unknown fields, so a misspelt key (say `readinessprobe`) fails too.
lint-k8s:
	$(BIN)/kubernetes-validate --strict --kubernetes-version $(K8S_VERSION) $(K8S_MANIFESTS)

ci: lint test ## what .ci/run does

soak: $(STAMP_TEST) $(MODEL_DIR)/efficientnet_lite0.onnx ## issue 5's 5-minute soak of a real server
	$(BIN)/python tools/soak.py --model $(MODEL_DIR)/efficientnet_lite0.onnx $(SOAK_ARGS)

bench: $(STAMP_TEST) ## issue 7's benchmarks (~10 min); writes artifacts/bench-*.{md,json}
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean-models: ## delete exported graphs
	rm -rf $(MODEL_DIR)

clean: ## delete the venv and caches (keeps exported graphs)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# Issue 13: the service side by side with NVIDIA Triton, TorchServe and BentoML (~20 min on
# 2 cores). Each peer's venv is installed under .venv-peers/ on first use, from the pinned
# benchmarks/peers/<peer>/requirements.txt. Not in CI (too long); tests/benchmarks runs its
# --quick dry run.
BENCH_PEERS_ARGS ?=
.PHONY: bench-peers
bench-peers: $(STAMP_TEST) ## issue 13's peers (~20 min); writes artifacts/peers-*.{md,json}
	$(BIN)/python -m benchmarks.peers $(BENCH_PEERS_ARGS)
