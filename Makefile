# Two commands on a fresh machine: `make repro` and `make test`. Both create the virtual
# environment first when it is missing or older than pyproject.toml/constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HAS_GPU = $(shell $(BIN)/python -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)

.PHONY: help setup repro test test-gpu lint params clean-venv sweep
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)


setup: $(STAMP)  ## create the virtual environment (.venv) with every dependency

repro: setup  ## run the main experiment (GPU) or, without a CUDA GPU, the CPU profile
	@if [ "$(HAS_GPU)" = 1 ]; then \
	  PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc repro; \
	else \
	  echo "make repro: no CUDA GPU here -> running the CPU profile (dvc exp run -S profile=cpu):"; \
	  echo "  PyTorch and ONNX Runtime on the CPU; FP16 and TensorRT are reported as skipped."; \
	  echo "  params.yaml in the workspace becomes the CPU profile; 'git checkout params.yaml' restores the default."; \
	  PATH=$(abspath $(BIN)):$$PATH $(BIN)/dvc exp run -S profile=cpu; \
	fi

test: setup  ## run the test suite (GPU/TensorRT tests skip themselves without the hardware)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q

test-gpu: setup  ## only the GPU and TensorRT tests (on a GPU host; set TRT_PYTHON if TensorRT lives elsewhere)
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m pytest -q -m "gpu or tensorrt"

sweep: setup  ## queue GRID (e.g. GRID="calibrate.method=minmax,entropy precision=int8,fp16") on DVC's queue, JOBS at a time (default: one per GPU), then report to reports/sweep/
	PATH=$(abspath $(BIN)):$$PATH $(BIN)/python -m stages.sweep run $(GRID) $(if $(JOBS),--jobs $(JOBS))

lint: setup  ## ruff and mypy
	$(BIN)/ruff check stages tests
	$(BIN)/ruff format --check stages tests
	$(BIN)/mypy stages

params: setup  ## recompose params.yaml from conf/ defaults (what DVC's Hydra integration does)
	$(BIN)/python -c "import os; from dvc.utils.hydra import compose_and_dump as c; c('params.yaml', os.path.abspath('conf'), None, 'config', '', [])"

clean-venv:  ## remove the virtual environment
	rm -rf $(VENV)
