# gpu-provisioner — developer entry points. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# Options of `make demo`, e.g. DEMO_ARGS="--scenario capacity" (see python -m hack.demo --help).
DEMO_ARGS ?=
# Options of `make bench`, e.g. BENCH_ARGS="--claims 20" or "--scenario storm" (python -m bench.provision --help).
BENCH_ARGS ?=
# Where cluster-up keeps its state and kubeconfig.
LOCAL_DIR ?= .local

.DEFAULT_GOAL := help

.PHONY: help
help: ## List targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

# The controller's dependencies exactly as the image installs them (requirements.lock), then the
# package itself, the offline cloud (fakes/, a distribution of its own) and the test tools.
$(VENV)/.installed: pyproject.toml fakes/pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet -e ./fakes -e '.[test,fake]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create .venv: locked dependencies, the package, the fakes and the test tools

# uv resolves requirements.lock (`make lock`); installed into the venv on demand, pinned.
UV_VERSION ?= 0.13.8

.PHONY: lock
lock: venv ## Regenerate requirements.lock and requirements-build.lock from pyproject.toml, hashes included (UPGRADE=1: newest pins)
	$(PY) -m pip install --quiet 'uv==$(UV_VERSION)'
	UV=$(VENV)/bin/uv hack/lock.sh

.PHONY: image
image: ## Build the controller image with buildah (no daemon; pulls the base image pinned by digest)
	hack/image.sh build

.PHONY: image-standin
image-standin: ## The same Dockerfile on a Debian-package stand-in base, for machines without registry access
	hack/image.sh standin

.PHONY: tools
tools: ## Build kube-apiserver, kubectl, etcd and helm from pinned Go modules (cached)
	@hack/build-tools.sh >/dev/null

.PHONY: lint
lint: venv ## ruff (lint + format check) and mypy --strict on provisioner/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: test
test: venv tools lint ## Everything: lint, unit, integration (real Azure SDK vs fake ARM), e2e (real kube-apiserver)
	$(PY) -m pytest $(PYTEST_ARGS)

# Claims the API server must accept in `make fuzz` (make test runs a batch of 24).
FUZZ_CLAIMS ?= 300

.PHONY: fuzz
fuzz: venv tools ## Generated good and bad claims (FUZZ_CLAIMS=300) against the real controller and the fake ARM
	BAD_INPUT_CLAIMS=$(FUZZ_CLAIMS) $(PY) -m pytest tests/e2e/test_bad_input.py -s $(PYTEST_ARGS)

.PHONY: docs
docs: venv ## Regenerate docs/configuration.md from the settings code
	$(PY) -m hack.gen_config_docs

.PHONY: demo
demo: venv tools ## Kaito end to end with no cloud account: fake ARM, --cloud azure, live progress (DEMO_ARGS=--help)
	@$(PY) -m hack.demo --local-dir $(LOCAL_DIR) $(DEMO_ARGS)

.PHONY: bench
bench: venv tools ## Benchmarks: time to Ready, controller overhead, cloud calls per claim; JSON in bench/results/ (BENCH_ARGS=--help)
	$(PY) -m bench.provision $(BENCH_ARGS)

.PHONY: cluster-up
cluster-up: venv ## Start the local control plane in the background; writes $(LOCAL_DIR)/kubeconfig
	@$(PY) -m hack.cluster up --state-dir $(LOCAL_DIR)/cluster --kubeconfig $(LOCAL_DIR)/kubeconfig

.PHONY: cluster-down
cluster-down: venv ## Stop the local control plane and remove its state
	@$(PY) -m hack.cluster down --state-dir $(LOCAL_DIR)/cluster --kubeconfig $(LOCAL_DIR)/kubeconfig

.PHONY: clean
clean: cluster-down ## Remove the venv and local state (the tool cache in ~/.cache/gpu-provisioner stays)
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
