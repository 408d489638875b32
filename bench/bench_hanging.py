"""Hanging endpoints do not starve other work: N ModelDeployments in namespace ``slow`` whose NIM endpoint accepts
connections and then sends one byte a second (never a complete answer) are rolled out, so the operator probes
them again and again. Then each round measures, while those probes hang:

- in namespace ``fast``: the time until a new DPOCollection, local DPOTrainingJob and ModelDeployment have their
  child (Job, Job, Deployment), and until a rolled-out ModelDeployment whose endpoint answers is Ready;
- in namespace ``remote``: the time until a Customizer DPOTrainingJob is Running (datasets ensured, job submitted,
  first status poll), and from its remote job completing (the NeMo emulator's next status answer) until it is
  Succeeded (Customizer polls at ``pollIntervalSeconds: 1``);
- in namespace ``slow`` itself (the tenant whose endpoints hang): a new ModelDeployment to its Deployment.

Target: about 1 s for every child, and a poll interval (plus pacing) for a Customizer completion.

The emulated API server runs in this process, the operator in a separate one (`dpo-operator run`); a
ModelDeployment's probe URL is ``http://127.0.0.1:{port}`` with its spec's port: the trickling server's for
``slow``, a small answering NIM stand-in's for ``fast``; the NeMo services are the tests' NeMo emulator
(tests/fakes/nemo.py). Run: `make bench-hanging` (or `python bench/bench_hanging.py`).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
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
NEMO_KEY = "bench-nemo-key"


def customizer_training(nemo_url: str) -> dict[str, Any]:
    """A Customizer DPOTrainingJob on a dataset already in the Datastore (no upload pod), polled every second."""
    return {
        "backend": "customizer",
        "dataset": {"location": {"hub": {"endpoint": f"{nemo_url}/v1/hf", "repoId": "team-a/collected"}}},
        "model": {"name": "meta/llama-3.2-1b-instruct@v1.0.0+A100"},
        "hyperparameters": {"epochs": 1, "batchSize": 16, "learningRate": 0.0001},
        "customizer": {"entityStoreUrl": nemo_url, "datastoreUrl": nemo_url, "namespace": "team-a",
                       "apiKeySecretRef": {"name": "nemo", "key": "api-key"},
                       "hfTokenSecretRef": {"name": "nemo", "key": "hf-token"}, "pollIntervalSeconds": 1},
    }


def answering_nim(model: str) -> tuple[http.server.ThreadingHTTPServer, int]:
    """A NIM endpoint that is ready and lists ``model``."""
    listing = json.dumps({"object": "list", "data": [{"id": model}]}).encode()

    class Nim(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            body = listing if self.path == "/v1/models" else b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Nim)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


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


def phase(kube: Any, kind: str, namespace: str, name: str) -> str | None:
    return (kube.get(kind, namespace, name).get("status") or {}).get("phase")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dpo_operator import crdgen
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from tests.fakes.nemo import DEFAULT_SCRIPT, FakeNemo
    from tests.kubehelpers import Kube, wait_for

    server, port = hanging_server()
    nim, nim_port = answering_nim(SERVE["model"]["explicit"]["name"])
    slow_serve, fast_serve = {**SERVE, "port": port}, {**SERVE, "port": nim_port}
    with EmbeddedCluster() as cluster, FakeNemo(api_key=NEMO_KEY, hf_token="bench-hf-token") as nemo:
        nemo.repos["team-a/collected"] = {"training/training_file.jsonl": b'{"prompt": "p"}\n'}
        running, completed = DEFAULT_SCRIPT[1], DEFAULT_SCRIPT[2]
        nemo.script = [running]  # a submitted job runs until a round completes it
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        kube = Kube(kubernetes.client.ApiClient(configuration))
        for crd in crdgen.all_crds():
            kube.apply_crd(crd)
        for namespace in ("slow", "fast", "remote"):
            kube.core.create_namespace({"metadata": {"name": namespace}})
        kube.core.create_namespaced_secret("remote", {"metadata": {
            "name": "nemo", "labels": {"dpo.ai/usable": "true"}, "annotations": {"dpo.ai/allowed-urls": nemo.url}},
            "data": {"api-key": base64.b64encode(NEMO_KEY.encode()).decode(),
                     "hf-token": base64.b64encode(b"bench-hf-token").decode()}})
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig),
               "DPO_PROBE_URL_TEMPLATE": "http://127.0.0.1:{port}"}
        operator = subprocess.Popen([sys.executable, "-m", "dpo_operator", "run", "--standalone", "-n", "slow",
                                     "-n", "fast", "-n", "remote", "--liveness", "http://127.0.0.1:0/healthz"],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        latencies: dict[str, list[float]] = {"fast DPOCollection -> Job": [], "fast DPOTrainingJob -> Job": [],
                                             "fast ModelDeployment -> Deployment": [],
                                             "fast ModelDeployment rolled out -> Ready": [],
                                             "remote Customizer DPOTrainingJob -> Running": [],
                                             "remote Customizer job completed -> Succeeded": [],
                                             "slow ModelDeployment -> Deployment": []}
        try:
            time.sleep(3)  # let the operator start its watches
            for i in range(args.count):
                kube.create("ModelDeployment", "slow", f"m{i:03d}", slow_serve)
            for i in range(args.count):  # play the Deployment controller: every rollout completes, so all get probed
                name = f"m{i:03d}"
                wait_for(lambda: kube.deployment("slow", name), timeout=300, what=f"Deployment {name}")
                kube.roll_out("slow", name)
            time.sleep(5)  # probes of every endpoint are under way
            for r in range(args.rounds):
                c, t, m, s, x = f"c{r}", f"t{r}", f"f{r}", f"s{r}", f"x{r}"
                latencies["fast DPOCollection -> Job"].append(timed(
                    lambda: kube.create("DPOCollection", "fast", c, COLLECTION), lambda: kube.job("fast", f"{c}-collect")))
                latencies["fast DPOTrainingJob -> Job"].append(timed(
                    lambda: kube.create("DPOTrainingJob", "fast", t, TRAINING), lambda: kube.job("fast", f"{t}-train")))
                latencies["fast ModelDeployment -> Deployment"].append(timed(
                    lambda: kube.create("ModelDeployment", "fast", m, fast_serve), lambda: kube.deployment("fast", m)))
                latencies["fast ModelDeployment rolled out -> Ready"].append(timed(
                    lambda: kube.roll_out("fast", m), lambda: phase(kube, "ModelDeployment", "fast", m) == "Ready"))
                latencies["remote Customizer DPOTrainingJob -> Running"].append(timed(
                    lambda: kube.create("DPOTrainingJob", "remote", x, customizer_training(nemo.url)),
                    lambda: phase(kube, "DPOTrainingJob", "remote", x) == "Running"))
                job_id = kube.get("DPOTrainingJob", "remote", x)["status"]["remoteJobId"]
                latencies["remote Customizer job completed -> Succeeded"].append(timed(
                    lambda: nemo._scripts.__setitem__(job_id, [dict(completed)]),
                    lambda: phase(kube, "DPOTrainingJob", "remote", x) == "Succeeded"))
                latencies["slow ModelDeployment -> Deployment"].append(timed(
                    lambda: kube.create("ModelDeployment", "slow", s, slow_serve), lambda: kube.deployment("slow", s)))
                time.sleep(1)
        finally:
            operator.terminate()
            operator.wait(timeout=30)
            server.close()
            nim.shutdown()
    print(f"ModelDeployments in namespace slow whose endpoint trickles one byte a second: {args.count}")
    for what, values in latencies.items():
        print(f"{what}: median {statistics.median(values):.2f} s, max {max(values):.2f} s over {len(values)} rounds")

if __name__ == "__main__":
    main()
