# dpo-operator developer targets. `make demo` and `make test` are the README's two set-up commands.
PYTHON ?= python3
comma  := ,
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# every install is constrained by this lock (the full dev set; the images install subsets of it): `make lock` renews it
LOCK   := requirements/lock.txt
EXTRAS := test,workload,nat,wandb
UV_VERSION := 0.13.9
# the one version (pyproject.toml): the chart's version/appVersion and the default image tags must equal it (tests/test_release.py)
VERSION     := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
REGISTRY    ?= ghcr.io/dpo-operator
TAG         ?= $(VERSION)
TORCH_INDEX ?= https://download.pytorch.org/whl/cu128

.PHONY: venv install lock nat-lock lint demo demo-loop dev-cluster test test-e2e crds manifests images e2e-kind bench-pairs bench-trainer bench-trainer-vocab bench-trainer-memory bench-dataset-reader bench-scale bench-hanging pin-images clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

venv: $(PY)

install: $(PY)  ## install the operator, the embedded cluster, the workloads (CPU torch, NAT, W&B client) and test tools
	$(PIP) install --quiet -c $(LOCK) -e '.[$(EXTRAS)]'

# Resolve every extra into $(LOCK), keeping its current pins where pyproject.toml still allows them (UPGRADE=1: the
# newest versions allowed). uv reads only torch's metadata from the index (its CUDA wheel's: the lock also pins the
# CUDA libraries the workload image gets), never the wheel; pip then takes torch==2.13.0 from wherever it is offered
# (the CPU build on disk here, the CUDA build from TORCH_INDEX in docker/workload.Dockerfile). A local label (+cpu)
# that a find-links source could put in the pin is dropped, so that the one pin serves both.
lock: $(PY)  ## re-resolve requirements/lock.txt from pyproject.toml (after changing a dependency; commit the result)
	$(PIP) install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml $(foreach extra,$(subst $(comma), ,$(EXTRAS)),--extra $(extra)) \
	    --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(if $(UPGRADE),--upgrade) --no-config -o $(LOCK)
	sed -i -E 's/^torch==([0-9.]+)\+[a-z0-9]+$$/torch==\1/' $(LOCK)

# The workload image's NAT environment (docker/workload.Dockerfile: /opt/nat, Python 3.12), apart from $(LOCK):
# NeMo Customizer's NAT plugin and nvidia-nat[eval] pin huggingface-hub<2 and python-dateutil<3, against ours.
NAT_LOCK := requirements/nat-lock.txt
nat-lock: $(PY)  ## re-resolve requirements/nat-lock.txt from requirements/nat.in (commit the result)
	$(PIP) install --quiet uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile requirements/nat.in --python-version 3.12 --python-platform x86_64-manylinux_2_28 \
	    $(if $(UPGRADE),--upgrade) --no-config -o $(NAT_LOCK)

lint: install  ## ruff and mypy, as configured in pyproject.toml
	$(VENV)/bin/ruff check operator tests bench scripts
	$(VENV)/bin/mypy

demo: install  ## run the pipeline on an embedded, emulated cluster (no cluster, no GPU)
	$(PY) -m dpo_operator demo

demo-loop: install  ## rounds of on-policy DPO (a DPOLoop) on the embedded cluster; plot in .demo/loop/
	$(PY) -m dpo_operator demo-loop

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

# For a private registry: `make images REGISTRY=registry.example.com/ml TAG=0.1.0 PUSH=1`, then install the chart with
# the helm --set line this prints. TORCH_INDEX=https://download.pytorch.org/whl/cpu builds a CPU-only workload image.
images:  ## build $(REGISTRY)/dpo-operator:$(TAG) and $(REGISTRY)/dpo-workload:$(TAG) (PUSH=1 also pushes them)
	docker build -f docker/operator.Dockerfile -t $(REGISTRY)/dpo-operator:$(TAG) .
	docker build -f docker/workload.Dockerfile --build-arg TORCH_INDEX=$(TORCH_INDEX) -t $(REGISTRY)/dpo-workload:$(TAG) .
	$(if $(PUSH),docker push $(REGISTRY)/dpo-operator:$(TAG))
	$(if $(PUSH),docker push $(REGISTRY)/dpo-workload:$(TAG))
	@echo "helm install dpo-operator charts/dpo-operator -n dpo-system --create-namespace --set image.repository=$(REGISTRY)/dpo-operator --set image.tag=$(TAG) --set workloads.image=$(REGISTRY)/dpo-workload:$(TAG)"

pin-images: $(PY)  ## pin docker/*.Dockerfile base images by digest (needs docker buildx or crane, and the registry)
	$(PY) scripts/pin_images.py

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

bench-dataset-reader: install  ## the trainer's row readers at 100k and 1M pairs: lazy JSONL vs datasets (Arrow): peak RSS, time
	$(PY) bench/bench_dataset_reader.py

bench-scale: install  ## 2,000 DPOCollections against the emulated cluster: time to all Jobs, operator CPU and peak RSS
	$(PY) bench/bench_scale.py --count 2000

bench-hanging: install  ## 200 ModelDeployments with hanging endpoints: new DPOCollection to Job latency
	$(PY) bench/bench_hanging.py --count 200

clean:
	rm -rf $(VENV) .demo .dev-cluster .pytest_cache
