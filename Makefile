# Two commands on a fresh machine: `make repro` and `make test`. Both create the virtual
# environment first when it is missing or older than pyproject.toml/constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The serving interpreter (PyTriton needs numpy<2, so it is a venv apart): $SERVE_PYTHON when
# set in the environment, else .venv-serve, built from serve-requirements.txt when needed.
SERVE_VENV ?= .venv-serve
ifeq ($(origin SERVE_PYTHON),environment)
SERVE_STAMP :=
else
SERVE_PYTHON := $(abspath $(SERVE_VENV))/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed
endif
HAS_GPU = $(shell $(BIN)/python -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

.PHONY: help setup serve-venv repro test test-gpu lint params clean-venv sweep compare
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# perf_analyzer (the served benchmark's load generator) goes into the same venv; where it
# cannot (no libb64-0d and not root), the serve stage records "skipped" and says why.
$(SERVE_VENV)/.installed: serve-requirements.txt tools/serving/install-perf-analyzer.sh
	@test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	timeout 900 $(SERVE_VENV)/bin/python -m pip install -q --upgrade pip
	timeout 900 $(SERVE_VENV)/bin/python -m pip install -q -r serve-requirements.txt
	timeout 900 bash tools/serving/install-perf-analyzer.sh $(SERVE_VENV) || echo "make: continuing without perf_analyzer"
	@touch $@

setup: $(STAMP)  ## create the virtual environment (.venv) with every dependency

serve-venv: $(SERVE_STAMP)  ## create the serving interpreter (.venv-serve: PyTriton, numpy<2, ONNX Runtime, perf_analyzer)

repro: setup $(SERVE_STAMP)  ## run the main experiment (GPU) or, without a CUDA GPU, the CPU profile (NO_TENSORRT=1: without TensorRT)
	@$(BIN)/python tools/gpu_extra.py --python $(BIN)/python $(if $(NO_TENSORRT),--no-tensorrt)
	@if [ "$(HAS_GPU)" = 1 ]; then \
	  SERVE_PYTHON=$(SERVE_PYTHON) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro; \
	else \
	  echo "make repro: no CUDA GPU here -> running the CPU profile (dvc exp run -S profile=cpu):"; \
	  echo "  PyTorch and ONNX Runtime on the CPU; FP16 and TensorRT are reported as skipped."; \
	  echo "  params.yaml in the workspace becomes the CPU profile; 'git checkout params.yaml' restores the default."; \
	  SERVE_PYTHON=$(SERVE_PYTHON) PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc exp run -S profile=cpu; \
	fi

test: setup $(SERVE_STAMP)  ## run the test suite (GPU/TensorRT tests skip themselves without the hardware)
	SERVE_PYTHON=$(SERVE_PYTHON) PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

test-gpu: setup  ## only the GPU and TensorRT tests (on a GPU host; set TRT_PYTHON if TensorRT lives elsewhere)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "gpu or tensorrt"

sweep: setup  ## queue GRID (e.g. GRID="calibrate.method=minmax,entropy precision=int8,fp16") on DVC's queue, JOBS at a time (default: one per GPU), then report to reports/sweep/
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m stages.sweep run $(GRID) $(if $(JOBS),--jobs $(JOBS))

# `dvc exp show` gives every file dep (each stage's code, data and reports) a column; compare hides them
DEPS_COLUMNS := (stages|artifacts|data|reports)/|params\.yaml$$
compare: setup  ## the experiments of HEAD side by side: the params and curated metrics that differ (KEEP=regex adds columns, SORT=metric sorts)
	@PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc exp show --no-pager --only-changed --drop '$(DEPS_COLUMNS)' \
	  $(if $(KEEP),--keep '$(KEEP)') $(if $(SORT),--sort-by $(SORT))

lint: setup  ## ruff and mypy
	$(BIN)/ruff check stages tests
	$(BIN)/ruff format --check stages tests
	$(BIN)/mypy stages

params: setup  ## recompose params.yaml from conf/ defaults (what DVC's Hydra integration does)
	$(BIN)/python -c "import os; from dvc.utils.hydra import compose_and_dump as c; c('params.yaml', os.path.abspath('conf'), None, 'config', '', [])"

clean-venv:  ## remove the virtual environments
	rm -rf $(VENV) $(SERVE_VENV)
