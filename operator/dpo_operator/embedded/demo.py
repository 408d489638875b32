"""The embedded demo: the whole pipeline on a laptop, no cluster, no GPU.

It starts the emulated API server, applies the CRDs, runs the real operator and a local executor standing in for
the kubelet; builds a tiny starting policy; then applies a ModelDeployment serving it, a DPOCollection on the
tic-tac-toe workflow against that endpoint, and a DPOTrainingJob whose ``deployOnCompletion`` serves the trained
model only through its promotion gate: a DPOEvaluation of the trained model against the starting policy on held-out
positions. It prints ``kubectl get dpo``-style rows as they change, the dataset, and the before/after table from the
evaluation's status.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import kubernetes

from dpo_operator.api import GROUP, VERSION
from dpo_operator.embedded.demo_env import (BASE_MODEL, apply, build_starting_policy, demo_cluster, first_failure,
                                            follow, free_port, resource, side_line)

NAMESPACE = "dpo-demo"
HELD_OUT = 200  # positions the gate evaluates (the collection's own are excluded)
GATE = "tictactoe-dpo-gate"  # the DPOEvaluation the promotion gate creates (named from the training job)


def pipeline(examples: int, base_port: int, trained_port: int) -> list[dict[str, Any]]:
    """The resources the demo applies: a NIM for the starting policy, then collection → training → deployment."""
    base_model = BASE_MODEL
    return [
        resource("ModelDeployment", "base-policy", {
            "model": {"explicit": {"name": "tictactoe-base", "pvc": base_model}}, "servedModelName": "tictactoe-base",
            "port": base_port, "readinessTimeoutSeconds": 300, "template": {"image": "local/dev-stand-in"}}),
        resource("DPOCollection", "tictactoe", {
            "workflow": {"name": "tictactoe", "numExamples": examples},
            "llm": {"baseUrl": f"http://127.0.0.1:{base_port}/v1", "model": "tictactoe-base", "temperature": 1.0,
                    "maxTokens": 3, "maxConcurrency": 4},
            "candidatesPerTurn": 4, "output": {"pvc": {"claimName": "demo-data", "path": "/datasets/tictactoe"}}}),
        resource("DPOTrainingJob", "tictactoe-dpo", {
            "dataset": {"collectionRef": {"name": "tictactoe"}},
            "model": {"name": "tictactoe-base", "pvc": base_model},
            # DPO with an SFT term on the chosen moves (as RPO does): on a model this small, DPO alone sharpens the
            # base policy's own favourite cells more than it teaches it which cell is better
            "hyperparameters": {"finetuningType": "all_weights", "epochs": 3, "batchSize": 16, "learningRate": 3.0e-4,
                                "maxSeqLength": 256, "dpo": {"refPolicyKlPenalty": 0.1, "sftLossWeight": 1.0}},
            "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "demo-data", "path": "/models"}},
            "deployOnCompletion": {"port": trained_port, "servedModelName": "tictactoe-dpo",
                                   "readinessTimeoutSeconds": 300, "template": {"image": "local/dev-stand-in"},
                                   # served only if it plays better than the starting policy on held-out positions
                                   "promotion": {"evaluation": evaluation_template(examples)}}}),
    ]


def evaluation_template(examples: int) -> dict[str, Any]:
    """The before/after comparison as the promotion gate's DPOEvaluation: the trained model (the operator fills in
    the candidate) against the starting policy's ModelDeployment, on positions the collection did not play (held
    out by default), greedy answers, the same seeds on both sides."""
    return {"workflow": {"name": "tictactoe", "numExamples": examples + HELD_OUT}, "maxExamples": HELD_OUT,
            "baseline": {"modelDeploymentRef": {"name": "base-policy"}},
            "sampling": {"temperature": 0.0, "maxTokens": 4, "maxConcurrency": 4},
            "gate": {"minImprovement": 0.0, "confidence": 0.95},
            "template": {"image": "local/dev-stand-in"}}


def run_demo(workdir: Path, examples: int = 200, timeout: float = 600.0) -> int:
    """0 when the trained policy passed the promotion gate (better than the starting one on held-out positions) and
    is served; 2 when the gate refused it; 1 when the pipeline failed."""
    with demo_cluster(workdir, NAMESPACE) as env:
        build_starting_policy(env)
        base_port, trained_port = free_port(), free_port()
        resources = pipeline(examples, base_port, trained_port)
        # the starting policy's NIM first: the collector calls it at a 127.0.0.1 port, where a refusal for
        # NEVER_ANSWERED_SECONDS means a wrong URL (exit code 4), and a NIM process starts slowly on a busy machine
        apply(env.custom, NAMESPACE, resources[:1], "base-policy.yaml")
        print("\n$ kubectl wait --for=condition=Ready modeldeployment/base-policy -n dpo-demo")
        served = follow(env.custom, NAMESPACE, lambda: _served(env.custom, "base-policy"), timeout, env.started)
        if served != "ready":
            print(f"\npipeline stopped: {served}")
            return 1
        apply(env.custom, NAMESPACE, resources[1:], "pipeline.yaml")
        final = follow(env.custom, NAMESPACE, lambda: _verdict(env.custom), timeout, env.started)
        if final not in ("ready", NOT_PROMOTED):
            print(f"\npipeline stopped: {final}")
            return 1
        _show_dataset(env.executor.pvc_dir("demo-data") / "datasets/tictactoe")
        _show_gate(env.custom)
        print(f"\ndone in {time.monotonic() - env.started:.0f}s; volumes and pod logs under {workdir.resolve()}")
    if final == NOT_PROMOTED:
        print("DPO did not improve the policy on held-out positions this time: the trained model was not promoted")
        return 2
    return 0


NOT_PROMOTED = "not promoted"


def _served(custom: kubernetes.client.CustomObjectsApi, name: str) -> str | None:
    """"ready" once the ModelDeployment serves, a message when it failed, else None (still starting)."""
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", name).get("status") or {}
    if status.get("phase") == "Ready":
        return "ready"
    if status.get("phase") == "Failed":
        return f"ModelDeployment {name} failed: {status.get('message')}"
    return None


def _verdict(custom: kubernetes.client.CustomObjectsApi) -> str | None:
    """"ready" once the trained model is promoted and served, :data:`NOT_PROMOTED` when the gate refused it, a
    message when something failed, else None (still going)."""
    if (failure := first_failure(custom, NAMESPACE)) is not None:
        return failure
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments")["items"]:
        if item["metadata"]["name"] == "tictactoe-dpo" and (item.get("status") or {}).get("phase") == "Ready":
            return "ready"
    for item in custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "dpotrainingjobs")["items"]:
        if ((item.get("status") or {}).get("promotion") or {}).get("step") == "NotPromoted":
            return NOT_PROMOTED
    return None


def _show_dataset(path: Path) -> None:
    metrics = json.loads((path / "metrics.json").read_text())
    print(f"\ndataset at {path}:")
    for key in ("candidates", "decisionPoints", "tiedPairsDropped", "duplicatesRemoved", "pairs", "meanScoreDiff"):
        print(f"  {key:<18} {metrics[key]}")
    first = json.loads((path / "training/training_file.jsonl").read_text().splitlines()[0])
    print("  first training pair:")
    print("    prompt:   " + first["prompt"].replace("\n", "\n              "))
    print(f"    chosen:   {first['chosen_response']!r}   rejected: {first['rejected_response']!r}")


def _show_gate(custom: kubernetes.client.CustomObjectsApi) -> None:
    """The before/after table, from the promotion gate's DPOEvaluation status."""
    status = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "dpoevaluations", GATE).get("status") or {}
    held_out, diff, outcomes = status.get("heldOut") or {}, status.get("difference") or {}, status.get("outcomes") or {}
    print(f"\n== the promotion gate: DPOEvaluation {GATE} on {held_out.get('evaluated')} held-out positions "
          f"({held_out.get('description')}) ==\n"
          "whole games from each position against a perfect opponent, greedy answers through each NIM's "
          "/v1/chat/completions, each move scored by minimax (+1 win, 0 draw, -1 loss; unparsable or illegal -2)")
    for label, side in (("before DPO (base-policy):  ", status.get("baseline") or {}),
                        ("after DPO  (tictactoe-dpo):", status.get("candidate") or {})):
        print(f"{label}  {side_line(side)}")
    print(f"difference {diff.get('mean', float('nan')):+.3f}, {diff.get('confidence', 0):.0%} interval "
          f"[{diff.get('lower', float('nan')):+.3f}, {diff.get('upper', float('nan')):+.3f}] ({diff.get('method')}, "
          f"{diff.get('resamples')} resamples, seed {diff.get('seed')}); wins {outcomes.get('wins')}, ties "
          f"{outcomes.get('ties')}, losses {outcomes.get('losses')}")
    print(f"verdict {status.get('verdict')}: {status.get('verdictMessage', '')}")
