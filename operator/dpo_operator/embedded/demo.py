"""The embedded demo: the whole control loop on a laptop, no cluster, no GPU.

It starts the emulated API server, applies the CRDs, runs the real operator, a local executor standing in for
the kubelet, and a scripted OpenAI-compatible policy standing in for a NIM; then applies a DPOCollection on the
tic-tac-toe workflow and prints ``kubectl get dpo``-style rows until it finishes, and the dataset it produced.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import kubernetes

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS, GROUP, VERSION
from dpo_operator.kube.status import TERMINAL_PHASES

NAMESPACE = "dpo-demo"


def _json_path(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.strip(".").split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def get_rows(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> list[str]:
    """``kubectl get dpo`` for every kind, using the CRDs' printer columns."""
    lines = []
    for kind in ALL_KINDS:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]
        if not items:
            continue
        columns = [c for c in crdgen.crd_for(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
                   if not c.get("priority") and c["name"] != "Age"]
        header = ["NAME"] + [c["name"].upper() for c in columns]
        rows = [[f"{kind.singular}/{item['metadata']['name']}"]
                + ["<none>" if (v := _json_path(item, c["jsonPath"])) is None else str(v) for c in columns]
                for item in items]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines += ["   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    return lines


def run_demo(workdir: Path, examples: int = 24, timeout: float = 300.0) -> int:
    from dpo_operator.embedded.cluster import EmbeddedCluster
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.operator_thread import OperatorThread
    from dpo_operator.embedded.policy_server import PolicyServer

    logging.getLogger("kopf").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    workdir.mkdir(parents=True, exist_ok=True)
    print("== embedded cluster: emulated API server + the real operator + a local executor (dev stand-ins) ==")
    with EmbeddedCluster() as cluster, PolicyServer(skill=0.35, noise=0.15, seed=1) as policy:
        cluster.use_as_default()
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        api = kubernetes.client.ApiClient(configuration)
        for crd in crdgen.all_crds():
            kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        custom = kubernetes.client.CustomObjectsApi(api)
        print(f"api server {cluster.url}; policy endpoint {policy.url} (scripted tic-tac-toe player, not an LLM)")
        with OperatorThread([NAMESPACE]), LocalExecutor(api, workdir, NAMESPACE) as executor:
            collection = {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "DPOCollection", "metadata": {"name": "tictactoe"},
                "spec": {"workflow": {"name": "tictactoe", "numExamples": examples},
                         "llm": {"baseUrl": policy.url, "model": policy.model, "temperature": 1.0},
                         "candidatesPerTurn": 4, "numRuns": 2, "pairing": {"strategy": "exhaustive", "maxPairsPerTurn": 3},
                         "output": {"pvc": {"claimName": "demo-data", "path": "/datasets/tictactoe"}}},
            }
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "dpocollections", collection)
            print("$ kubectl apply -f dpocollection.yaml\ndpocollection.dpo.ai/tictactoe created")
            status = _follow(custom, timeout)
            if status.get("phase") != "Succeeded":
                print(f"collection ended {status.get('phase')}: {status.get('message')}")
                return 1
            dataset = executor.pvc_dir("demo-data") / "datasets/tictactoe"
            _show_dataset(dataset)
    return 0


def _follow(custom: kubernetes.client.CustomObjectsApi, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: list[str] = []
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "dpocollections", "tictactoe").get("status") or {}
        rows = get_rows(custom, NAMESPACE)
        if rows != last:
            print("$ kubectl get dpo -n dpo-demo\n" + "\n".join(rows))
            last = rows
        if status.get("phase") in TERMINAL_PHASES:
            return status
        time.sleep(0.5)
    return {**status, "phase": "Timeout", "message": f"not finished after {timeout}s"}


def _show_dataset(path: Path) -> None:
    metrics = json.loads((path / "metrics.json").read_text())
    print(f"\ndataset at {path}:")
    for key in ("candidates", "decisionPoints", "tiedPairsDropped", "duplicatesRemoved", "pairs", "meanScoreDiff"):
        print(f"  {key:<18} {metrics[key]}")
    first = json.loads((path / "training/training_file.jsonl").read_text().splitlines()[0])
    print("  first training pair:")
    print("    prompt:   " + first["prompt"].replace("\n", "\n              "))
    print(f"    chosen:   {first['chosen_response']!r}   rejected: {first['rejected_response']!r}")
