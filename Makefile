# mlrollouts — developer entry points. Every target installs what it needs into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make test` runs its test files on this many workers (pytest-xdist); a file stays on one worker,
# because the playground scenarios share one playground per file. TEST_WORKERS=0 runs them in turn.
TEST_WORKERS ?= 2

.PHONY: venv prereqs-demo prereqs-test test test-unit test-integration test-e2e test-faults test-faults-long fuzz lint crds demo bench bench-serving bench-router \
        bench-operator bench-bandits bench-apiserver bench-composite bench-learning images test-images e2e-images kind-e2e soak clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: prereqs-test venv
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Fault tests (marker `faults`: hung upstreams, Prometheus outages, ...); they also run in `make test`.
test-faults: prereqs-test venv
	$(PY) -m pytest -m faults $(PYTEST_ARGS)

# The long operator SIGKILL run: 20 kills over a canary and 10 over a rollback on the playground; it
# prints the invariant counts (kills, steps, checks, backward weight moves, longest gap, client errors).
test-faults-long: prereqs-test venv
	MLROLLOUTS_FAULT_KILLS_CANARY=20 MLROLLOUTS_FAULT_KILLS_ROLLBACK=10 \
	  $(PY) -m pytest -s --timeout 900 tests/e2e/test_faults_operator_kills.py $(PYTEST_ARGS)

# Generated requests against the router and its composite models (schemathesis + hypothesis), 10 000 examples per
# run instead of the few hundred of `make test`.
FUZZ_EXAMPLES ?= 10000
fuzz: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -p no:cacheprovider tests/integration/router/test_router_schema_fuzz.py tests/integration/router/test_router_fuzz.py $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check operator serving_image tests
	$(VENV)/bin/ruff format --check operator serving_image tests
	$(VENV)/bin/mypy -p mlrollouts.api -p mlrollouts.core -p mlrollouts.experiment -p mlrollouts.rollout -p mlrollouts.learning -p mlrollouts.composite -p mlrollouts.traffic
	$(VENV)/bin/lint-imports

# The local playground end to end: every scenario at once (canary, composite, online learning; plots in out/demo/).
demo: prereqs-demo venv
	$(VENV)/bin/mlrollouts local demo --output-dir out/demo

crds: venv
	$(VENV)/bin/mlrollouts crds --output-dir crds
	$(VENV)/bin/mlrollouts crds --output-dir charts/mlrollouts/files/crds

# System packages, checked (and installed where apt-get can run) before anything slow.
prereqs-demo prereqs-test:
	@PYTHON=$(PYTHON) bash hack/prereqs.sh $(@:prereqs-%=%)

clean:
	rm -rf $(VENV) .mlrollouts .pytest_cache .mypy_cache .ruff_cache

# Benchmarks print their numbers; they are not part of `make test`.
bench: bench-serving bench-router bench-operator bench-bandits bench-apiserver bench-composite bench-learning

bench-serving: venv
	$(PY) tests/bench/bench_serving.py
	$(PY) tests/bench/bench_scaleout.py --replicas 5

bench-router: venv
	$(PY) tests/bench/bench_router.py

bench-operator: venv
	$(PY) tests/bench/bench_operator.py

bench-bandits: venv
	$(PY) tests/bench/bench_bandits.py

bench-apiserver: venv
	$(PY) tests/bench/bench_apiserver.py

bench-composite: venv
	$(PY) tests/bench/bench_composite.py

# Online learning: learner throughput, snapshot hot-loading, guard rollback on the playground (one table).
bench-learning: venv
	$(PY) tests/bench/bench_learning.py

# Soak on the local playground (not part of `make bench`; needs prometheus): mixed traffic through the
# router and a new canary every few minutes for SOAK_MINUTES (default 30); prints RSS/fd/thread growth
# per component, 5xx/4xx counts and canaries promoted; exit status 1 when a target is missed.
SOAK_MINUTES ?= 30

soak: prereqs-demo venv
	SOAK_MINUTES=$(SOAK_MINUTES) $(PY) tests/bench/soak.py

# Container images: Docker where a daemon answers, else buildah (a local Debian base where no
# registry answers; LOCAL_BASE=1 forces it). Sizes and build times are printed at the end.
images:
	bash hack/images.sh

# Image smoke tests (tests/images, not in `make test`): builds with buildah, runs with podman as a
# restricted pod would. Without buildah/podman they skip with the install hint (fail under CI=true).
test-images: venv
	BUILDER=buildah bash hack/images.sh
	$(PY) -m pytest tests/images $(PYTEST_ARGS)

# The canary on the playground with every pod a container of the built images (`local up --runtime
# podman`) and the operator installed from the chart's rendered manifests; every API call the operator's
# container makes is checked against the chart's RBAC. Builds the images first when absent.
e2e-images: prereqs-test venv
	bash hack/e2e-images.sh

# The kind end-to-end run (needs Docker; it says so and stops where it is absent).
kind-e2e: venv
	bash hack/kind-e2e.sh
