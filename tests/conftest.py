"""Fixtures: an API server (embedded emulator, or a real cluster via $DPO_E2E_KUBECONFIG) and the real operator.

Tests talk to the Kubernetes API only (the kubernetes client over HTTP), so the same tests run against a real
cluster: `DPO_E2E_KUBECONFIG=~/.kube/config pytest -m e2e` (the CRDs must be installed there).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

from dpo_operator import crdgen
from tests.kubehelpers import Kube

REAL_CLUSTER = os.environ.get("DPO_E2E_KUBECONFIG")
# on a real cluster with the operator installed (scripts/e2e-kind.sh), the tests use that operator
IN_CLUSTER_OPERATOR = bool(os.environ.get("DPO_E2E_IN_CLUSTER_OPERATOR"))
# name: (data, where it may be sent: the tests' LLM endpoint, NGC)
TEST_SECRETS = {"nim-key": ({"api-key": "sk-1"}, "http://nim.example:8000/v1"),
                "ngc": ({"NGC_API_KEY": "ngc-1"}, "https://api.ngc.nvidia.com")}


@pytest.fixture(autouse=True)
def quick_rollout_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Operators started by tests look at a rolling-out ModelDeployment every second (default 5 s): the NIM
    stand-ins and fakes answer at once, so the default only adds waiting. Autouse, so set before any operator."""
    monkeypatch.setenv("DPO_ROLLOUT_CHECK_SECONDS", "1")


@pytest.fixture(scope="session")
def pod_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the emulated API server reads pod logs from (``<namespace>/<pod>/output.log``)."""
    return tmp_path_factory.mktemp("pod-logs")


@pytest.fixture(scope="session")
def kubeconfig(pod_logs: Path) -> Iterator[Path]:
    if REAL_CLUSTER:
        os.environ["KUBECONFIG"] = REAL_CLUSTER
        yield Path(REAL_CLUSTER)
        return
    from dpo_operator.kubeemu.cluster import EmbeddedCluster

    with EmbeddedCluster(log_root=pod_logs) as cluster:
        cluster.use_as_default()
        yield cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(kubeconfig: Path, pod_logs: Path) -> Kube:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
    kube = Kube(kubernetes.client.ApiClient(configuration), real_cluster=bool(REAL_CLUSTER), pod_logs=pod_logs)
    if not REAL_CLUSTER:
        from dpo_operator.embedded.nim_operator import nim_operator_crds

        # ours, and the NIM Operator's real CRDs (backend nimOperator's objects are validated by their schema)
        for crd in [*crdgen.all_crds(), *nim_operator_crds()]:
            kube.apply_crd(crd)
    return kube


@pytest.fixture()
def namespace(kube: Kube) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube.core.create_namespace({"metadata": {"name": name}})
    for secret, (data, urls) in TEST_SECRETS.items():  # the Secrets the tests' specs name, opted in for the operator
        kube.usable_secret(name, secret, data, allowed_urls=urls)
    yield name
    try:
        kube.core.delete_namespace(name)
    except kubernetes.client.ApiException:
        pass


@pytest.fixture()
def operator(kube: Kube, namespace: str) -> Iterator[None]:
    """The real operator (kopf), watching this test's namespace, in a background thread."""
    from kopf.testing import KopfRunner

    if IN_CLUSTER_OPERATOR:
        yield
        return
    args = ["run", "--standalone", "--namespace", namespace, "-m", "dpo_operator.handlers"]
    with KopfRunner(args, timeout=60) as runner:
        yield
    assert runner.exception is None or isinstance(runner.exception, SystemExit), runner.output
