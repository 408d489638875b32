# dpo-operator developer targets. `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: venv install demo dev-cluster test test-e2e crds manifests e2e-kind bench-pairs bench-trainer bench-trainer-vocab bench-trainer-memory bench-scale bench-hanging clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)  ## install the operator, the embedded cluster, the workloads (CPU torch, NAT, W&B client) and test tools
	$(PIP) install --quiet -e '.[test,workload,nat,wandb]'

demo: install  ## run the pipeline on an embedded, emulated cluster (no cluster, no GPU)
	$(PY) -m dpo_operator demo

dev-cluster: install  ## an emulated cluster (API server, CRDs, operator, local executor) for kubectl, until Ctrl-C
	$(PY) -m dpo_operator dev-cluster

test: install  ## the whole default test suite (emulated cluster; GPU-only tests skip)
	$(PY) -m pytest -q

test-e2e: install  ## only the tests that run the operator against the (emulated) API server
	$(PY) -m pytest -q -m e2e

crds: install  ## regenerate crds/ (and the chart's copy) from the API models
	$(PY) -m dpo_operator crds -o crds
	$(PY) -m dpo_operator crds -o charts/dpo-operator/crds

manifests: crds  ## regenerate manifests/install.yaml (from the chart) and the Argo CD health ConfigMap
	$(PY) scripts/render_manifests.py

e2e-kind: install  ## the e2e suite on a kind cluster with the built images (skips without docker/kind)
	bash scripts/e2e-kind.sh

bench-pairs: install  ## pair building from 1,000,000 candidate events
	$(PY) bench/bench_pairs.py

bench-trainer: install  ## our DPO trainer vs TRL on CPU: tokens/s, peak RSS
	$(PIP) install --quiet trl==1.16.0
	$(PY) bench/bench_trainer.py

bench-trainer-vocab: install  ## our DPO trainer vs TRL with a 256k vocabulary and 2k-token sequences: peak RSS, tokens/s
	$(PIP) install --quiet trl==1.16.0
	$(PY) bench/bench_trainer_vocab.py

bench-trainer-memory: install  ## our trainer's peak RSS for 10k, 30k and 100k pairs (flat: rows are read lazily)
	$(PY) bench/bench_trainer_memory.py

bench-scale: install  ## 500 DPOCollections against the emulated cluster: time to all Jobs, operator peak RSS
	$(PY) bench/bench_scale.py --count 500

bench-hanging: install  ## 200 ModelDeployments with hanging endpoints: new DPOCollection to Job latency
	$(PY) bench/bench_hanging.py --count 200

clean:
	rm -rf $(VENV) .demo .dev-cluster .pytest_cache
