"""Hanging endpoints do not starve other work: N ModelDeployments in namespace ``slow`` whose NIM endpoint accepts
connections and then sends one byte a second (never a complete answer) are rolled out, so the operator probes
them again and again. Then, in namespace ``fast``, each round creates a DPOCollection, a local DPOTrainingJob and
a ModelDeployment, and measures the time until each has its child (Job, Job, Deployment); the same is measured for
a ModelDeployment in ``slow`` itself (the tenant whose endpoints hang). Target: under 1 s for ``fast``.

The emulated API server runs in this process, the operator in a separate one (`dpo-operator run`), the probe URL
points at a local TCP server that trickles. Run: `make bench-hanging` (or `python bench/bench_hanging.py`).
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
from typing import Any

import kubernetes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

COLLECTION = {
    "workflow": {"name": "tictactoe", "numExamples": 8},
    "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct"},
    "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets"}},
}


TRAINING = {
    "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}},
    "model": {"name": "tiny", "pvc": {"claimName": "models", "path": "/tiny"}},
    "hyperparameters": {"epochs": 1, "batchSize": 4, "learningRate": 0.001, "finetuningType": "all_weights"},
    "local": {"gpusPerNode": 1, "output": {"claimName": "dpo-data", "path": "/models"}},
}
SERVE = {"model": {"explicit": {"name": "meta/llama-3.2-1b-instruct"}}, "readinessTimeoutSeconds": 3600}


def hanging_server() -> tuple[socket.socket, int]:
    """Accepts every connection and sends one byte a second, never a complete HTTP answer."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1024)

    def trickle(connection: socket.socket) -> None:
        try:
            while True:
                connection.sendall(b"H")
                time.sleep(1.0)
        except OSError:
            return

    def accept() -> None:
        while True:
            try:
                connection = server.accept()[0]
            except OSError:
                return
            threading.Thread(target=trickle, args=(connection,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def timed(create: Any, exists: Any) -> float:
    from tests.kubehelpers import wait_for

    start = time.monotonic()
    create()
    try:
        wait_for(exists, timeout=120, interval=0.02, what="child")
    except AssertionError:
        return float("inf")  # none within 120 s
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dpo_operator import crdgen
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from tests.kubehelpers import Kube, wait_for

    server, port = hanging_server()
    with EmbeddedCluster() as cluster:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        kube = Kube(kubernetes.client.ApiClient(configuration))
        for crd in crdgen.all_crds():
            kube.apply_crd(crd)
        for namespace in ("slow", "fast"):
            kube.core.create_namespace({"metadata": {"name": namespace}})
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
               "DPO_PROBE_URL_TEMPLATE": f"http://127.0.0.1:{port}"}
        operator = subprocess.Popen([sys.executable, "-m", "dpo_operator", "run", "--standalone", "-n", "slow",
                                     "-n", "fast", "--liveness", "http://127.0.0.1:0/healthz"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latencies: dict[str, list[float]] = {"fast DPOCollection -> Job": [], "fast DPOTrainingJob -> Job": [],
                                             "fast ModelDeployment -> Deployment": [],
                                             "slow ModelDeployment -> Deployment": []}
        try:
            time.sleep(3)  # let the operator start its watches
            for i in range(args.count):
                kube.create("ModelDeployment", "slow", f"m{i:03d}", SERVE)
            for i in range(args.count):  # play the Deployment controller: every rollout completes, so all get probed
                name = f"m{i:03d}"
                wait_for(lambda: kube.deployment("slow", name), timeout=300, what=f"Deployment {name}")
                kube.roll_out("slow", name)
            time.sleep(5)  # probes of every endpoint are under way
            for r in range(args.rounds):
                c, t, m, s = f"c{r}", f"t{r}", f"f{r}", f"s{r}"
                latencies["fast DPOCollection -> Job"].append(timed(
                    lambda: kube.create("DPOCollection", "fast", c, COLLECTION), lambda: kube.job("fast", f"{c}-collect")))
                latencies["fast DPOTrainingJob -> Job"].append(timed(
                    lambda: kube.create("DPOTrainingJob", "fast", t, TRAINING), lambda: kube.job("fast", f"{t}-train")))
                latencies["fast ModelDeployment -> Deployment"].append(timed(
                    lambda: kube.create("ModelDeployment", "fast", m, SERVE), lambda: kube.deployment("fast", m)))
                latencies["slow ModelDeployment -> Deployment"].append(timed(
                    lambda: kube.create("ModelDeployment", "slow", s, SERVE), lambda: kube.deployment("slow", s)))
                time.sleep(1)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            server.close()
    print(f"ModelDeployments in namespace slow whose endpoint trickles one byte a second: {args.count}")
    for what, values in latencies.items():
        print(f"{what}: median {statistics.median(values):.2f} s, max {max(values):.2f} s over {len(values)} rounds")

if __name__ == "__main__":
    main()
