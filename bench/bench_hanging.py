"""Hanging endpoints do not starve other reconciles: N ModelDeployments whose NIM endpoint accepts connections
and never answers are rolled out (so the operator probes them, again and again), then a new DPOCollection is
created and the time until its Job exists is measured (several rounds). Target: under 1 s with 200 endpoints.

The emulated API server runs in this process, the operator in a separate one (`dpo-operator run`), the probe URL
points at a local TCP server that never answers. Run: `make bench-hanging` (or `python bench/bench_hanging.py`).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLLECTION = {
    "workflow": {"name": "tictactoe", "numExamples": 8},
    "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct"},
    "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets"}},
}


def hanging_server() -> tuple[socket.socket, int]:
    """Accepts every connection and never answers (keeps the sockets open)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dpo_operator import crdgen
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from tests.kubehelpers import Kube, wait_for

    namespace = "bench"
    server, port = hanging_server()
    with EmbeddedCluster() as cluster:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        kube = Kube(kubernetes.client.ApiClient(configuration))
        for crd in crdgen.all_crds():
            kube.apply_crd(crd)
        kube.core.create_namespace({"metadata": {"name": namespace}})
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
               "DPO_PROBE_URL_TEMPLATE": f"http://127.0.0.1:{port}"}
        operator = subprocess.Popen([sys.executable, "-m", "dpo_operator", "run", "--standalone", "-n", namespace,
                                     "--liveness", "http://127.0.0.1:0/healthz"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latencies: list[float] = []
        try:
            time.sleep(3)  # let the operator start its watches
            for i in range(args.count):
                kube.create("ModelDeployment", namespace, f"m{i:03d}", {
                    "model": {"explicit": {"name": "meta/llama-3.2-1b-instruct"}}, "readinessTimeoutSeconds": 3600})
            for i in range(args.count):  # play the Deployment controller: every rollout completes, so all get probed
                name = f"m{i:03d}"
                wait_for(lambda: kube.deployment(namespace, name), timeout=120, what=f"Deployment {name}")
                kube.roll_out(namespace, name)
            time.sleep(5)  # probes of every endpoint are under way
            for r in range(args.rounds):
                name = f"c{r}"
                start = time.monotonic()
                kube.create("DPOCollection", namespace, name, COLLECTION)
                wait_for(lambda: kube.job(namespace, f"{name}-collect"), timeout=120, interval=0.02, what="job")
                latencies.append(time.monotonic() - start)
                time.sleep(1)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            server.close()
    print(f"ModelDeployments with a hanging endpoint: {args.count}")
    print(f"new DPOCollection to Job: median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s "
          f"over {len(latencies)} rounds (target < 1 s)")


if __name__ == "__main__":
    main()
