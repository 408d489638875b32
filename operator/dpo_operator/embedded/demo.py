"""The embedded demo: the whole pipeline on a laptop, no cluster, no GPU.

It starts the emulated API server, applies the CRDs, runs the real operator and a local executor standing in for
the kubelet; builds a tiny starting policy; then applies a ModelDeployment serving it, a DPOCollection on the
tic-tac-toe workflow against that endpoint, and a DPOTrainingJob whose ``deployOnCompletion`` serves the trained
model. It prints ``kubectl get dpo``-style rows as they change, the dataset, and the move quality of the policy
before and after DPO on held-out positions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import kubernetes

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS, GROUP, VERSION

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}


def pipeline(examples: int, base_port: int, trained_port: int) -> list[dict[str, Any]]:
    """The resources the demo applies: a NIM for the starting policy, then collection → training → deployment."""
    base_model = {"claimName": "models", "path": "/tictactoe-base"}
    return [
        _resource("ModelDeployment", "base-policy", {
            "model": {"explicit": {"name": "tictactoe-base", "pvc": base_model}}, "servedModelName": "tictactoe-base",
            "port": base_port, "readinessTimeoutSeconds": 300, "template": {"image": "local/dev-stand-in"}}),
        _resource("DPOCollection", "tictactoe", {
            "workflow": {"name": "tictactoe", "numExamples": examples},
            "llm": {"baseUrl": f"http://127.0.0.1:{base_port}/v1", "model": "tictactoe-base", "temperature": 1.0,
                    "maxTokens": 3, "maxConcurrency": 4},
            "candidatesPerTurn": 4, "output": {"pvc": {"claimName": "demo-data", "path": "/datasets/tictactoe"}}}),
        _resource("DPOTrainingJob", "tictactoe-dpo", {
            "dataset": {"collectionRef": {"name": "tictactoe"}},
            "model": {"name": "tictactoe-base", "pvc": base_model},
            # DPO with an SFT term on the chosen moves (as RPO does): on a model this small, DPO alone sharpens the
            # base policy's own favourite cells more than it teaches it which cell is better
            "hyperparameters": {"finetuningType": "all_weights", "epochs": 3, "batchSize": 16, "learningRate": 3.0e-4,
                                "maxSeqLength": 256, "dpo": {"refPolicyKlPenalty": 0.1, "sftLossWeight": 1.0}},
            "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "demo-data", "path": "/models"}},
            "deployOnCompletion": {"port": trained_port, "servedModelName": "tictactoe-dpo",
                                   "readinessTimeoutSeconds": 300, "template": {"image": "local/dev-stand-in"}}}),
    ]


def run_demo(workdir: Path, examples: int = 200, timeout: float = 600.0) -> int:
    """0 when the pipeline finished and the trained policy plays better than the starting one on held-out positions."""
    from dpo_operator.collect import tictactoe
    from dpo_operator.embedded import demo_policy
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.operator_thread import OperatorThread

    logging.getLogger("kopf").setLevel(logging.ERROR)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    os.environ["DPO_PROBE_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # the operator runs here, not in a cluster
    os.environ["DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # so do the pods (local processes)
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    print("== embedded cluster: emulated API server + the real operator + a local executor (dev stand-ins) ==")
    print("The local executor runs each Job's container command as a local process and each NIM Deployment as\n"
          "`dpo-operator serve` (a local OpenAI-compatible server with the NIM conventions): a development stand-in.")
    with EmbeddedCluster(log_root=workdir / "pods") as cluster:
        cluster.use_as_default()
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        api = kubernetes.client.ApiClient(configuration)
        for crd in crdgen.all_crds():
            kubernetes.client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
        kubernetes.client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
        for claim in ("models", "demo-data"):  # as on a real cluster, a pod waits (Pending) for a missing claim
            kubernetes.client.CoreV1Api(api).create_namespaced_persistent_volume_claim(NAMESPACE, {
                "metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}})
        custom = kubernetes.client.CustomObjectsApi(api)
        with OperatorThread([NAMESPACE]), LocalExecutor(api, workdir, NAMESPACE, serve_deployments=True) as executor:
            base_dir = executor.pvc_dir("models") / "tictactoe-base"
            print("\n== the starting policy: a tiny char-level model (built here, nothing downloaded), warmed up to "
                  "answer a random legal cell ==")
            demo_policy.build_base_policy(base_dir)
            print(f"built {base_dir} in {time.monotonic() - started:.0f}s")
            base_port, trained_port = _free_port(), _free_port()
            resources = pipeline(examples, base_port, trained_port)
            print("\n$ kubectl apply -f pipeline.yaml")
            for obj in resources:
                plural = next(k.plural for k in ALL_KINDS if k.kind == obj["kind"])
                custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, obj)
                print(f"{obj['kind'].lower()}.{GROUP}/{obj['metadata']['name']} created")
            final = _follow(custom, timeout, started)
            if final is not None:
                print(f"\npipeline stopped: {final}")
                return 1
            _show_dataset(executor.pvc_dir("demo-data") / "datasets/tictactoe")
            seen = set(tictactoe.random_positions(examples, seed=42))
            positions = demo_policy.held_out_positions(200, exclude=seen)
            print(f"\n== move quality on {len(positions)} held-out positions (greedy answers through each NIM's "
                  "/v1/chat/completions, scored by minimax) ==")
            before = demo_policy.move_quality(f"http://127.0.0.1:{base_port}/v1", "tictactoe-base", positions)
            after = demo_policy.move_quality(f"http://127.0.0.1:{trained_port}/v1", "tictactoe-dpo", positions)
            print(f"before DPO (base-policy):    {before.line()}")
            print(f"after DPO  (tictactoe-dpo):  {after.line()}")
            print(f"\ndone in {time.monotonic() - started:.0f}s; volumes and pod logs under {workdir}")
    if after.mean_value <= before.mean_value:
        print("DPO did not improve the policy on held-out positions this time")
        return 2
    return 0


def _verdict(custom: kubernetes.client.CustomObjectsApi) -> str | None:
    """"ready" once the trained model is served, a message when something failed, else None (still going)."""
    for kind in ALL_KINDS:
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, kind.plural)["items"]:
            status = item.get("status") or {}
            if status.get("phase") == "Failed":
                return f"{kind.kind} {item['metadata']['name']} failed: {status.get('message')}"
            if kind.kind == "ModelDeployment" and item["metadata"]["name"] == "tictactoe-dpo" \
                    and status.get("phase") == "Ready":
                return "ready"
    return None


def _follow(custom: kubernetes.client.CustomObjectsApi, timeout: float, started: float) -> str | None:
    """Print ``kubectl get dpo`` whenever it changes; None once the trained model is Ready, else what went wrong."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        verdict = _verdict(custom)  # read before the rows, so the rows printed last show what ended the wait
        rows = get_rows(custom, NAMESPACE)
        if rows != last:
            print(f"\n[{time.monotonic() - started:5.0f}s] $ kubectl get dpo -n {NAMESPACE}\n" + "\n".join(rows))
            last = rows
        if verdict is not None:
            return None if verdict == "ready" else verdict
        time.sleep(0.5)
    return f"not finished after {timeout:.0f}s"


def _show_dataset(path: Path) -> None:
    metrics = json.loads((path / "metrics.json").read_text())
    print(f"\ndataset at {path}:")
    for key in ("candidates", "decisionPoints", "tiedPairsDropped", "duplicatesRemoved", "pairs", "meanScoreDiff"):
        print(f"  {key:<18} {metrics[key]}")
    first = json.loads((path / "training/training_file.jsonl").read_text().splitlines()[0])
    print("  first training pair:")
    print("    prompt:   " + first["prompt"].replace("\n", "\n              "))
    print(f"    chosen:   {first['chosen_response']!r}   rejected: {first['rejected_response']!r}")
