#!/usr/bin/env bash
# Run the e2e suite against a real cluster: kind + the images built here + the chart's install.yaml.
# Needs docker (with a daemon), kind and kubectl; says what is missing and exits 0 (skipped) without them.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${KIND_CLUSTER:-dpo-e2e}
missing=()
for tool in docker kind kubectl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})) || ! docker info >/dev/null 2>&1; then
  echo "e2e-kind: skipped: needs ${missing[*]:-a running docker daemon} (the default tests use the emulated cluster)"
  exit 0
fi
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
# the tags install.yaml names: the project's version (pyproject.toml), as a release publishes them
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
make images REGISTRY=ghcr.io/dpo-operator TAG="$VERSION" TORCH_INDEX=https://download.pytorch.org/whl/cpu
kind load docker-image --name "$CLUSTER" "ghcr.io/dpo-operator/dpo-operator:$VERSION" "ghcr.io/dpo-operator/dpo-workload:$VERSION"
kubectl --context "kind-$CLUSTER" apply --server-side -f manifests/install.yaml
# the tests' namespaces are created on the fly: let the operator read (opted-in) Secrets in all of them
kubectl --context "kind-$CLUSTER" create clusterrolebinding dpo-operator-secrets-e2e \
  --clusterrole=dpo-operator-secrets --serviceaccount=dpo-system:dpo-operator --dry-run=client -o yaml \
  | kubectl --context "kind-$CLUSTER" apply -f -
kubectl --context "kind-$CLUSTER" -n dpo-system rollout status deployment/dpo-operator --timeout=180s
kubeconfig=$(mktemp)
kind get kubeconfig --name "$CLUSTER" >"$kubeconfig"
# The in-cluster operator serves the tests (DPO_E2E_IN_CLUSTER_OPERATOR=1: no second operator in-process).
DPO_E2E_KUBECONFIG="$kubeconfig" DPO_E2E_IN_CLUSTER_OPERATOR=1 .venv/bin/python -m pytest -q -m e2e
