# Two entry points for a fresh machine: `make demo` and `make test`. Both set themselves up.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export GOTOOLCHAIN := local
# The controller layer must exercise this much of the reconcile loop and its kopf handlers.
COVERAGE_MIN := 85

.PHONY: venv setup binaries peers prometheus lint unit controller coverage e2e test demo demo-waves crds bench bench-scale bench-peers clean \
	image image-test image-test-run image-test-or-skip lock \
	dev-up dev-down

# Both distributions in one virtualenv: the operator (with its test tools) and the local
# environment, which depends on it and never the other way round.
$(BIN)/tidegate-dev: pyproject.toml tools/devenv/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]' -e tools/devenv
	touch $@

venv: $(BIN)/tidegate-dev

# Debian's Prometheus, unless PROMETHEUS names one.
prometheus:
	@if [ -z "$$PROMETHEUS" ] && ! command -v prometheus >/dev/null; then \
		echo "installing Debian's prometheus package"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	fi

# Built once into ~/.cache/tidegate/<versions>/bin (helm into its own helm-<version>/bin);
# a second run builds nothing.
binaries:
	@bash hack/build-binaries.sh all
	@bash hack/build-binaries.sh helm >/dev/null

setup: venv prometheus binaries

# Flagger and Argo Rollouts for the side-by-side benchmark, built once into
# ~/.cache/tidegate/peers-<versions>/bin. Not part of setup: `make test` does not need them.
peers:
	@bash hack/build-peers.sh all

lint: venv
	$(BIN)/ruff check operator tools tests bench
	$(BIN)/ruff format --check operator tools tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python hack/lock_digest.py --check

# Pure and fast: no processes, no sockets.
unit: venv
	$(BIN)/pytest tests/unit tools/devenv/tests -q

# The reconcile loop and handlers against recording fakes, in virtual time, with coverage.
controller coverage: venv
	$(BIN)/pytest tests/controller -q --cov=tidegate.reconciler --cov=tidegate.handlers \
		--cov-report=term-missing --cov-fail-under=$(COVERAGE_MIN)

# One after another unless E2E_WORKERS=N asks for N side-by-side workers on one shared
# environment (tests/e2e/conftest.py, docs/dev-cluster.md): not the default, since on two
# cores the latency-gated tests then fail under CPU contention. The slowest 15 tests are
# printed at the end, so that what the suite costs stays in view.
E2E_WORKERS ?= 0
e2e: setup
	$(BIN)/pytest tests/e2e -q --durations=15 -n $(E2E_WORKERS) --dist loadgroup

# Last, the image as the chart runs it, where buildah and podman are (or can be installed).
test: setup lint unit controller e2e image-test-or-skip

# The operator image (Dockerfile): with buildah, installed from Debian's packages when it can
# be, on a Debian base made from Debian's packages when no registry has one; else docker.
IMAGE ?= tidegate:dev
image:
	hack/image.sh $(IMAGE)

# The image as the chart runs it (uid 10001, read-only root, no capabilities), against the
# local environment: its own checks, then a rollout promoted and one rolled back, and a
# leader stopped in order, each with every operator in the image.
image-test: setup image image-test-run

image-test-run:
	TIDEGATE_OPERATOR_IMAGE=$(IMAGE) $(BIN)/pytest -q tests/e2e/test_image.py \
		tests/e2e/test_rollouts.py::test_failing_version_is_rolled_back \
		tests/e2e/test_rollouts.py::test_healthy_version_is_promoted_and_traffic_follows_each_step \
		tests/e2e/test_leader_election.py::test_a_leader_stopped_in_order_hands_over_at_once

# What `make test` ends with. hack/image.sh installs buildah and podman where it can (as
# setup installs Prometheus) and exits 2 where it cannot; the base and the image's layers
# stay in the container storage, so a second run rebuilds only what changed. A machine with
# docker and no podman builds the image but cannot run the test (the harness runs podman).
image-test-or-skip: setup
	@rc=0; hack/image.sh $(IMAGE) || rc=$$?; \
	if [ $$rc -eq 2 ] || ! command -v podman >/dev/null; then \
		echo "make test: SKIPPED the image test: no buildah and podman here, and they could not be installed"; \
	elif [ $$rc -ne 0 ]; then \
		exit $$rc; \
	else \
		$(MAKE) --no-print-directory image-test-run; \
	fi

# requirements.lock from pyproject.toml (the image installs it, by hash); `make lint` checks
# that it was written again after a dependency change.
lock:
	hack/lock.sh

# The CRDs from the pydantic models, and the copies the kustomization and Helm chart ship.
crds: venv
	$(BIN)/tidegate crds --write crds
	cp crds/progressiverollout.yaml deploy/kustomize/crds/crd.yaml
	cp crds/metrictemplate.yaml deploy/kustomize/crds/crd-metrictemplate.yaml
	cp crds/clustermetrictemplate.yaml deploy/kustomize/crds/crd-clustermetrictemplate.yaml
	cp crds/*.yaml deploy/helm/tidegate/crds/

demo: setup
	$(BIN)/tidegate-dev demo

# Three regions: a release walking a → b → c (spec.waves), a bad one stopped in a.
demo-waves: setup
	$(BIN)/tidegate-dev demo --waves

bench: setup
	$(BIN)/python bench/rollback_latency.py

# N rollouts at once (`make bench-scale N=100` for a quick run): the operator's memory, CPU,
# idle API requests, time to all Succeeded and step latency. No demo apps: see bench/scale.py.
N ?= 1000
bench-scale: setup
	$(BIN)/python bench/scale.py --rollouts $(N)

# tidegate, Flagger and Argo Rollouts one at a time on the same local environment and the
# same scenario (bench/scenario.py); one table, results in bench/results/. The fleet sizes
# are configurable: `make bench-peers BENCH_PEERS_N=100` for a shorter run. The peers'
# client-side request limits (tidegate's client has none) are raised so that at N = 1,000
# the limit is not what is measured; BENCH_PEERS_QPS= (empty) keeps their defaults.
# The gateway applies each change BENCH_PEERS_ROUTE_DELAY seconds late, for all three alike.
BENCH_PEERS_N ?= 100 1000
BENCH_PEERS_QPS ?= 1000
BENCH_PEERS_ROUTE_DELAY ?= 2
bench-peers: setup peers
	$(BIN)/python bench/peers.py --fleet $(BENCH_PEERS_N) --route-delay $(BENCH_PEERS_ROUTE_DELAY) \
		$(if $(BENCH_PEERS_QPS),--client-qps $(BENCH_PEERS_QPS))

dev-up: setup
	$(BIN)/tidegate-dev up

dev-down: venv
	$(BIN)/tidegate-dev down

clean:
	-$(BIN)/tidegate-dev down 2>/dev/null
	rm -rf $(VENV) .state .pytest_cache .mypy_cache .ruff_cache .coverage
