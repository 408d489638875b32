# dpo-operator developer targets. `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: venv install demo test test-e2e crds bench-pairs bench-trainer clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)  ## install the operator, the embedded cluster, the workloads (CPU torch) and test tools
	$(PIP) install --quiet -e '.[test,workload]'

demo: install  ## run the pipeline on an embedded, emulated cluster (no cluster, no GPU)
	$(PY) -m dpo_operator demo

test: install  ## the whole default test suite (emulated cluster; GPU-only tests skip)
	$(PY) -m pytest -q

test-e2e: install  ## only the tests that run the operator against the (emulated) API server
	$(PY) -m pytest -q -m e2e

crds: install  ## regenerate crds/ from the API models
	$(PY) -m dpo_operator crds -o crds

bench-pairs: install  ## pair building from 1,000,000 candidate events
	$(PY) bench/bench_pairs.py

bench-trainer: install  ## our DPO trainer vs TRL on CPU: tokens/s, peak RSS
	$(PIP) install --quiet trl==1.16.0
	$(PY) bench/bench_trainer.py

clean:
	rm -rf $(VENV) .demo .pytest_cache
