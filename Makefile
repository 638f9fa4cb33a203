# Two entry points for a fresh machine: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GOTOOLCHAIN := local

.PHONY: setup binaries prometheus lint unit e2e test demo crds bench clean dev-up dev-down

$(BIN)/tidegate: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# Debian's Prometheus, unless PROMETHEUS names one.
prometheus:
	@if [ -z "$$PROMETHEUS" ] && ! command -v prometheus >/dev/null; then \
		echo "installing Debian's prometheus package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	fi

# Built once into ~/.cache/tidegate/<versions>/bin; a second run builds nothing.
binaries:
	@bash hack/build-binaries.sh all

setup: $(BIN)/tidegate prometheus binaries

lint: $(BIN)/tidegate
	$(BIN)/ruff check operator tests
	$(BIN)/ruff format --check operator tests
	$(BIN)/mypy

unit: $(BIN)/tidegate
	$(BIN)/pytest tests/unit -q

e2e: setup
	$(BIN)/pytest tests/e2e -q

test: setup lint
	$(BIN)/pytest tests -q

# The CRD from the pydantic models, and the copies the kustomization and Helm chart ship.
crds: $(BIN)/tidegate
	$(BIN)/tidegate crds > crds/progressiverollout.yaml
	cp crds/progressiverollout.yaml deploy/kustomize/crd.yaml
	cp crds/progressiverollout.yaml deploy/helm/tidegate/crds/progressiverollout.yaml

demo: setup
	$(BIN)/tidegate demo

bench: setup
	$(BIN)/python bench/rollback_latency.py

dev-up: setup
	$(BIN)/tidegate dev up

dev-down: $(BIN)/tidegate
	$(BIN)/tidegate dev down

clean:
	-$(BIN)/tidegate dev down 2>/dev/null
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache
