# mlrollouts — developer entry points. Every target installs what it needs into .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test test-unit test-integration test-e2e lint crds demo bench bench-serving bench-router \
        bench-operator bench-bandits bench-apiserver bench-composite bench-learning images kind-e2e clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-integration: venv
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

test-e2e: venv
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check operator serving_image tests
	$(VENV)/bin/ruff format --check operator serving_image tests
	$(VENV)/bin/mypy -p mlrollouts.api -p mlrollouts.core -p mlrollouts.experiment -p mlrollouts.rollout -p mlrollouts.learning -p mlrollouts.composite -p mlrollouts.traffic
	$(VENV)/bin/lint-imports

# The local playground end to end: every scenario at once (canary, composite, online learning; plots in out/demo/).
demo: venv
	$(VENV)/bin/mlrollouts local demo --output-dir out/demo

crds: venv
	$(VENV)/bin/mlrollouts crds --output-dir crds
	$(VENV)/bin/mlrollouts crds --output-dir charts/mlrollouts/crds

clean:
	rm -rf $(VENV) .mlrollouts .pytest_cache .mypy_cache .ruff_cache

# Benchmarks print their numbers; they are not part of `make test`.
bench: bench-serving bench-router bench-operator bench-bandits bench-apiserver bench-composite bench-learning

bench-serving: venv
	$(PY) tests/bench/bench_serving.py

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

# Container images and the kind end-to-end run (need Docker; they say so and stop where it is absent).
images:
	bash hack/images.sh

kind-e2e: venv
	bash hack/kind-e2e.sh
