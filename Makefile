# Two commands do all set-up on a fresh machine (Python 3.10+; 3.11 tested):
#   make run    installs into .venv (reusing it if present) and runs the main job on the built-in images
#   make test   installs into .venv (reusing it if present) and runs the test suite
# Override VENV to reuse another virtualenv, TORCH_SPEC to pick a torch build, STUDY to run another study.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
STUDY ?= studies/repsr_ablation.yaml
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sr-search-installed

.PHONY: install run test test-slurm test-fast lint bench gpu-check gpu-rehearsal gpu-session clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and only if missing: an existing (e.g. CUDA) torch in the venv is kept as is
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

run: install
	$(VENV)/bin/sr-search launch $(STUDY)

# everything but the real-Slurm tests (a few minutes of sbatch jobs: `make test-slurm`, which CI runs too)
test: install
	$(PY) -m pytest -q -m "not slurm"

# the smoke study and a requeued study through a real Slurm (tools/slurm_local.sh start sets up a one-node one);
# they skip, saying why, where no Slurm answers
test-slurm: install
	$(PY) -m pytest -q -m slurm

# the tests that need no Ray instance (about 4 minutes on 2 cores), for the edit-test loop
test-fast: install
	$(PY) -m pytest -q -m "not ray and not multinode"

# style (ruff), the layers of the house (import-linter: one-way layers, Ray/Optuna in one adapter) and no private
# part of a dependency imported (its one listed exception: Ray's single-machine switch)
lint: install
	$(VENV)/bin/ruff check sr_search tests bench tools
	$(VENV)/bin/lint-imports
	$(PY) tools/check_private_imports.py

# On the machine's first GPU: CUDA tests, deploy on CUDA (fp32/fp16), a tiny GPU study, timing vs a hand-written
# CUDA-event loop. Prints "no GPU" and exits 0 where there is none.
gpu-check: install
	$(PY) tools/gpu_check.py

# The same checks on the CPU (CUDA tests skip, the timing ratio is reported, not judged): CI runs it, so the tool
# cannot rot between GPU sessions.
gpu-rehearsal: install
	$(PY) tools/gpu_check.py --device cpu

# For a lent GPU: gpu-check, the main job's first trials on CUDA with AMP, bench/real_data.py on CUDA; one summary
# file, at most 8 minutes. No install step (a lent machine may have no network): the venv's python if there is one,
# else python3 (PY=... picks another).
gpu-session:
	PY=$(if $(wildcard $(PY)),$(PY),python3) bash tools/gpu_session.sh

bench: install
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf runs .pytest_cache build *.egg-info
