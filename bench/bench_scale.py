"""Operator scale: create N DPOCollections at once and time until every one has its Job.

The emulated API server runs in this process; the operator runs as a separate process (`dpo-operator run`),
so its peak RSS (VmHWM) and CPU time are its own. Targets on 2 cores: 500 collections <= 30 s, 2,000 <= 45 s,
operator peak RSS <= 150 MB. On a machine shared with other work, compare runs by the operator's CPU seconds (the
load average is printed): wall time follows the load.
Run: `make bench-scale` (or `python bench/bench_scale.py --count 2000`).

The Jobs are counted with a one-item list (``limit=1``: the count is ``remainingItemCount`` + 1), so that the
measuring costs the same at every count; a full list of 2,000 Jobs twice a second, deserialised into the
client's models, took more CPU than the emulated API server's answers to the operator.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import kubernetes

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SPEC = {
    "workflow": {"name": "tictactoe", "numExamples": 8},
    "llm": {"baseUrl": "http://nim.example:8000/v1", "model": "meta/llama-3.2-1b-instruct"},
    "output": {"pvc": {"claimName": "dpo-data", "path": "/datasets"}},
}


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def job_count(batch: kubernetes.client.BatchV1Api, namespace: str) -> int:
    """How many Jobs the namespace has, from a one-item list (no selector: the API says how many remain)."""
    response = batch.list_namespaced_job(namespace, limit=1, _preload_content=False)
    listed = json.loads(response.data)
    return len(listed["items"]) + int(listed["metadata"].get("remainingItemCount") or 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--operator-log", type=Path, help="write the operator's output to this file (default: discard)")
    args = parser.parse_args()

    from dpo_operator import crdgen
    from dpo_operator.kubeemu.cluster import EmbeddedCluster
    from tests.kubehelpers import Kube

    namespace = "bench"
    with EmbeddedCluster() as cluster:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
        kube = Kube(kubernetes.client.ApiClient(configuration))
        for crd in crdgen.all_crds():
            kube.apply_crd(crd)
        kube.core.create_namespace({"metadata": {"name": namespace}})
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        output = args.operator_log.open("wb") if args.operator_log else subprocess.DEVNULL
        operator = subprocess.Popen([sys.executable, "-m", "dpo_operator", "run", "--standalone", "-n", namespace,
                                     "--liveness", "http://127.0.0.1:0/healthz"],
                                    env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            time.sleep(3)  # let the operator start its watches
            idle_rss = peak_rss_mib(operator.pid)
            load_before = os.getloadavg()
            start = time.monotonic()
            for i in range(args.count):
                kube.create("DPOCollection", namespace, f"c{i:04d}", SPEC)
            created = time.monotonic() - start
            jobs = 0
            while time.monotonic() - start < args.timeout:
                jobs = job_count(kube.batch, namespace)
                if os.environ.get("BENCH_TRACE"):
                    print(f"{time.monotonic() - start:6.1f}s {jobs}", flush=True)
                if jobs >= args.count:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - start
            peak = peak_rss_mib(operator.pid)
            operator_cpu = cpu_seconds(operator.pid)
            own_cpu = sum(os.times()[:2])
            load_after = os.getloadavg()
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    print(f"configuration: {args.count} DPOCollections in one namespace, {os.cpu_count()} CPUs, "
          f"Python {sys.version.split()[0]}, kubernetes client {kubernetes.__version__}")
    print("load average (1, 5, 15 min): before {:.2f} {:.2f} {:.2f}; after {:.2f} {:.2f} {:.2f}".format(
        *load_before, *load_after))
    print(f"collections: {args.count}; created in {created:.1f} s")
    print(f"jobs: {jobs}/{args.count} after {elapsed:.1f} s (from the first create; target: 500 <= 30 s, 2,000 <= 45 s)")
    print(f"CPU: operator {operator_cpu:.1f} s, emulated API server and this client {own_cpu:.1f} s")
    print(f"operator peak RSS: {peak:.0f} MiB (idle after start: {idle_rss:.0f} MiB; target <= 150 MB)")


if __name__ == "__main__":
    main()
