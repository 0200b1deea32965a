# polypseg: every target does its own set-up on a fresh machine.
SHELL := /bin/bash
UV ?= $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
BIN := .venv/bin
CONFIG ?= configs/unet.yaml
CKPT ?= checkpoints/unet/last.ckpt
MODEL ?= models/polypseg.onnx
export MLFLOW_TRACKING_URI ?= sqlite:///mlflow.db
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: setup setup-browser train test lint export serve demo repro benchmarks clean

setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null 2>&1 || python3 -m pip install --user --quiet uv
	$(UV) sync --frozen --extra dev
	$(BIN)/dvc config --global core.analytics false >/dev/null 2>&1 || true
	@touch $@

setup-browser:  ## Debian's Chromium for the demo's browser test (needs root)
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

train: setup  ## the default recipe on Kvasir-SEG ($$POLYPSEG_DATA_ROOT)
	$(BIN)/polypseg fit --config $(CONFIG)

test: setup  ## the whole test suite
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/hadolint Containerfile

export: setup  ## CKPT -> MODEL (+ int8 and fp16-weight files next to it), parity-checked
	$(BIN)/polypseg export --ckpt_path $(CKPT) --output $(MODEL) --int8 true --fp16 true

serve: setup  ## LitServe API on http://127.0.0.1:8000
	$(BIN)/polypseg serve --onnx $(MODEL)

demo: setup  ## Gradio page on http://127.0.0.1:7860
	$(BIN)/polypseg demo --onnx $(MODEL)

repro: setup  ## data -> train -> evaluate -> export with DVC (data_root: params.yaml, or $$POLYPSEG_DATA_ROOT)
	@if [ -n "$$POLYPSEG_DATA_ROOT" ]; then \
	  PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc exp run --set-param data_root="$$POLYPSEG_DATA_ROOT"; \
	else PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro; fi

benchmarks: setup
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf .cache reports predictions lightning_logs
