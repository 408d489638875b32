"""What the embedded demos share: the emulated cluster with the real operator and the local executor, the tiny
starting policy, ``kubectl get dpo``-style rows and the loop that prints them as they change.

``make demo`` (:mod:`dpo_operator.embedded.demo`) and ``make demo-loop`` (:mod:`dpo_operator.embedded.demo_loop`)
differ only in what they apply and what they print at the end.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import kubernetes

from dpo_operator import crdgen
from dpo_operator.api import ALL_KINDS, GROUP, VERSION

if TYPE_CHECKING:
    from dpo_operator.embedded.executor import LocalExecutor

BASE_MODEL = {"claimName": "models", "path": "/tictactoe-base"}  # where the starting policy is built
CLAIMS = ("models", "demo-data")


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}


def first_failure(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> str | None:
    """A message naming the first resource whose phase is Failed, if any."""
    for kind in ALL_KINDS:
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, namespace, kind.plural)["items"]:
            status = item.get("status") or {}
            if status.get("phase") == "Failed":
                return f"{kind.kind} {item['metadata']['name']} failed: {status.get('message')}"
    return None


def follow(custom: kubernetes.client.CustomObjectsApi, namespace: str, verdict: Callable[[], str | None],
           timeout: float, started: float) -> str:
    """Print ``kubectl get dpo`` whenever it changes, until ``verdict()`` says something (returned), or
    ``timeout`` seconds pass (a message saying so)."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    while time.monotonic() < deadline:
        said = verdict()  # read before the rows, so the rows printed last show what ended the wait
        rows = get_rows(custom, namespace)
        if rows != last:
            print(f"\n[{time.monotonic() - started:5.0f}s] $ kubectl get dpo -n {namespace}\n" + "\n".join(rows))
            last = rows
        if said is not None:
            return said
        time.sleep(0.5)
    return f"not finished after {timeout:.0f}s"


def apply(custom: kubernetes.client.CustomObjectsApi, namespace: str, resources: list[dict[str, Any]],
          filename: str) -> None:
    """``kubectl apply -f filename`` of ``resources``, printed as kubectl does."""
    print(f"\n$ kubectl apply -f {filename}")
    for obj in resources:
        plural = next(k.plural for k in ALL_KINDS if k.kind == obj["kind"])
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, obj)
        print(f"{obj['kind'].lower()}.{GROUP}/{obj['metadata']['name']} created")


def side_line(side: dict[str, Any]) -> str:
    """One row of the table: mean move value, share of invalid answers (of all moves), positions scored."""
    count = side.get("count") or 0
    return (f"mean move value {side.get('mean', float('nan')):+.3f}   invalid answers {side.get('invalidAnswers', 0):4d}"
            f"   failures {side.get('failures', 0)}   ({count} held-out positions)")


def _quiet() -> None:
    logging.getLogger("kopf").setLevel(logging.ERROR)
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@dataclass
class DemoCluster:
    """The running demo environment: the API client for custom resources and the local executor."""

    custom: kubernetes.client.CustomObjectsApi
    executor: LocalExecutor
    namespace: str
    started: float


@contextmanager
def demo_cluster(workdir: Path, namespace: str, started: float | None = None) -> Iterator[DemoCluster]:
    """A fresh ``workdir`` with the emulated API server, the CRDs, ``namespace`` with the demo's claims, the real
    operator and the local executor serving NIM Deployments; everything stops when the block ends."""
    from dpo_operator.embedded.executor import LocalExecutor
    from dpo_operator.embedded.operator_thread import OperatorThread
    from dpo_operator.kubeemu.cluster import EmbeddedCluster

    _quiet()
    os.environ["DPO_PROBE_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # the operator runs here, not in a cluster
    os.environ["DPO_WORKLOAD_ENDPOINT_URL_TEMPLATE"] = "http://127.0.0.1:{port}"  # so do the pods (local processes)
    workdir = workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.monotonic() if started is None else started
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
        core = kubernetes.client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": namespace}})
        for claim in CLAIMS:  # as on a real cluster, a pod waits (Pending) for a missing claim
            core.create_namespaced_persistent_volume_claim(namespace, {
                "metadata": {"name": claim}, "spec": {"accessModes": ["ReadWriteOnce"],
                                                      "resources": {"requests": {"storage": "1Gi"}}}})
        custom = kubernetes.client.CustomObjectsApi(api)
        with OperatorThread([namespace]), LocalExecutor(api, workdir, namespace, serve_deployments=True) as executor:
            yield DemoCluster(custom, executor, namespace, started)


def build_starting_policy(env: DemoCluster, **kwargs: Any) -> Path:
    """The tiny starting policy at :data:`BASE_MODEL` on the ``models`` claim (``kwargs``: its warm-up)."""
    from dpo_operator.embedded import demo_policy

    base_dir = env.executor.pvc_dir(BASE_MODEL["claimName"]) / BASE_MODEL["path"].strip("/")
    print("\n== the starting policy: a tiny char-level model (built here, nothing downloaded), warmed up to "
          "answer a random legal cell ==")
    demo_policy.build_base_policy(base_dir, **kwargs)
    print(f"built {base_dir} in {time.monotonic() - env.started:.0f}s")
    return base_dir
