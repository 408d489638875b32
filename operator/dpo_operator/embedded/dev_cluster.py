"""``dpo-operator dev-cluster``: an emulated cluster that stays up for people, as ``kind create cluster`` does.

The emulated API server with our CRDs installed, the real operator watching every namespace, the local executor
in place of the kubelet (Jobs run as local processes; NIM Deployments run as ``dpo-operator serve``) and a
tic-tac-toe policy server standing in for an LLM endpoint. It writes a kubeconfig, prints the ``export
KUBECONFIG=...`` line for kubectl, and runs until Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading
from pathlib import Path

import kubernetes

from dpo_operator import crdgen


def run_dev_cluster(workdir: Path, port: int | None = None, policy_port: int = 0,
                    stop: threading.Event | None = None) -> int:
    """Serve until Ctrl-C/SIGTERM (or ``stop`` is set); 0 on a clean shutdown."""
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.nim_operator import NimOperatorStandIn, nim_operator_crds
    from dpo_operator.embedded.operator_thread import OperatorThread
    from dpo_operator.embedded.policy_server import PolicyServer
    from dpo_operator.kubeemu.cluster import EmbeddedCluster

    for handler in logging.getLogger().handlers:  # quiet on the console; kopf still posts its INFO Events
        handler.setLevel(logging.WARNING)
    os.environ["DPO_PROBE_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # the operator runs here, not in a cluster
    os.environ["DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # so do the pods (local processes)
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    with EmbeddedCluster(port=port, log_root=workdir / "pods") as cluster:
        kubeconfig = workdir / "kubeconfig"
        shutil.copy(cluster.kubeconfig, kubeconfig)
        cluster.use_as_default()
        os.environ["KUBECONFIG"] = str(kubeconfig)
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        api = kubernetes.client.ApiClient(configuration)
        for crd in [*crdgen.all_crds(), *nim_operator_crds()]:  # ours, and the NIM Operator's (backend nimOperator)
            kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        with OperatorThread([]), LocalExecutor(api, workdir, serve_deployments=True), NimOperatorStandIn(api), \
                PolicyServer(port=policy_port) as policy:
            print(f"dev cluster: emulated API server at {cluster.url}, CRDs installed, operator running in all namespaces")
            print(f"local volumes (PVCs) and pod logs: {workdir}")
            print(f"an OpenAI-compatible tic-tac-toe policy for DPOCollection spec.llm.baseUrl: {policy.url}")
            print("Jobs run as local processes; NIM Deployments run as `dpo-operator serve`. Ctrl-C stops it all.\n")
            print(f"export KUBECONFIG={kubeconfig}", flush=True)
            stop.wait()
    print("dev cluster stopped")
    return 0
