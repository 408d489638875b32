"""The embedded loop demo (``make demo-loop``): iterative on-policy DPO on tic-tac-toe with one DPOLoop.

On the same embedded cluster as ``make demo`` (:mod:`dpo_operator.embedded.demo_env`) it builds the tiny starting
policy and applies one DPOLoop: the loop serves the starting policy, and each round collects pairs from the policy it
serves, trains the next policy from it (all weights, DPO with an SFT term, the served policy as reference), evaluates
the trained policy against the served one on held-out positions, and promotes it (the serving ModelDeployment now
serves it) only if the gate passes; a refused round ends the loop (``stop.whenNotPromoted``). It prints
``kubectl get dpo`` rows as they change, then per round: pairs, final training loss, the evaluation's candidate and
baseline means, their difference with its interval, the verdict and whether the round was promoted (from the loop's
lineage in ``status.rounds``), and writes a PNG of the score per round.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes

from dpo_operator.api import GROUP, VERSION
from dpo_operator.api.loop import KIND as LOOP_KIND
from dpo_operator.embedded.demo_env import (BASE_MODEL, apply, build_starting_policy, demo_cluster, first_failure,
                                            follow, free_port, resource)
from dpo_operator.embedded.loop_report import RoundFigures, table, write_plot

NAMESPACE = "dpo-demo-loop"
LOOP = "tictactoe"
SERVING = "tictactoe-policy"  # the ModelDeployment serving the current policy (the loop creates it, never owns it)
PLOT = "score-per-round.png"


@dataclass(frozen=True)
class LoopDemoConfig:
    """The loop demo's knobs: the defaults are ``make demo-loop``'s; the test shrinks them."""

    examples: int = 200  # positions each round's collection plays
    held_out: int = 200  # positions each round's gate evaluates
    rounds: int = 3  # maxRounds
    epochs: int = 3
    warmup_steps: int = 300  # the starting policy's supervised warm-up
    timeout: float = 900.0


def loop_spec(config: LoopDemoConfig, serving_port: int, candidate_port: int) -> dict[str, Any]:
    """The DPOLoop's spec: round after round of collect → train → gate → promote into ``SERVING``."""
    local = {"image": "local/dev-stand-in"}
    return {
        "maxRounds": config.rounds,
        "stop": {"whenNotPromoted": True},
        "reference": "previousRound",  # each round's DPO reference is the policy it sampled from (on-policy)
        "serving": {
            "name": SERVING,
            "template": {"port": serving_port, "servedModelName": "tictactoe-policy", "readinessTimeoutSeconds": 300,
                         "template": local},
            # the gate serves each round's candidate beside the serving policy: its own port on this machine
            "candidate": {"port": candidate_port, "readinessTimeoutSeconds": 300, "template": local}},
        "collection": {
            "workflow": {"name": "tictactoe", "numExamples": config.examples},
            "llm": {"temperature": 1.0, "maxTokens": 3, "maxConcurrency": 4},
            "candidatesPerTurn": 4, "output": {"claimName": "demo-data", "path": "/datasets"}},
        "training": {
            "model": {"name": "tictactoe-base", "pvc": BASE_MODEL},
            # as in `make demo`: DPO with an SFT term on the chosen moves (RPO-style); see embedded/demo.py
            "hyperparameters": {"finetuningType": "all_weights", "epochs": config.epochs, "batchSize": 16,
                                "learningRate": 3.0e-4, "maxSeqLength": 256,
                                "dpo": {"refPolicyKlPenalty": 0.1, "sftLossWeight": 1.0}},
            "local": {"gpusPerNode": 0, "precision": "fp32", "output": {"claimName": "demo-data", "path": "/models"}}},
        # the gate: the trained policy against the one serving, on positions the round's collection did not play
        "evaluation": {"workflow": {"name": "tictactoe", "numExamples": config.examples + config.held_out},
                       "maxExamples": config.held_out,
                       "sampling": {"temperature": 0.0, "maxTokens": 4, "maxConcurrency": 4},
                       "gate": {"minImprovement": 0.0, "confidence": 0.95},
                       "template": local},
    }


def round_figures(loop: dict[str, Any]) -> list[RoundFigures]:
    """Each finished or running round's figures, from the loop's lineage (``status.rounds``)."""
    figures = []
    for entry in (loop.get("status") or {}).get("rounds") or []:
        diff = entry.get("difference") or {}
        figures.append(RoundFigures(
            round=entry["round"], pairs=entry.get("pairs"), final_loss=entry.get("finalLoss"),
            candidate=entry.get("candidateMean"), baseline=entry.get("baselineMean"), difference=diff.get("mean"),
            lower=diff.get("lower"), upper=diff.get("upper"), verdict=entry.get("verdict"),
            promoted=bool(entry.get("promoted"))))
    return figures


def _read_loop(custom: kubernetes.client.CustomObjectsApi) -> dict[str, Any]:
    return custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, LOOP_KIND.plural, LOOP)


def _verdict(custom: kubernetes.client.CustomObjectsApi) -> str | None:
    """"done" once the loop stopped as designed, a message when it or one of its children failed, else None."""
    status = _read_loop(custom).get("status") or {}
    if status.get("phase") == "Succeeded":
        return "done"
    if status.get("phase") == "Failed":
        return f"DPOLoop {LOOP} failed ({status.get('reason')}): {status.get('message')}"
    return first_failure(custom, NAMESPACE)


def _show_lineage(loop: dict[str, Any]) -> None:
    status = loop.get("status") or {}
    print(f"\n== the loop's lineage (kubectl get dpoloop {LOOP} -o yaml: status.rounds) ==")
    for entry in status.get("rounds") or []:
        print(f"round {entry['round']}: sampled from {entry.get('sampledFrom')}; "
              f"{entry.get('pairs')} pairs at {entry.get('datasetLocation')} (sha256 "
              f"{(entry.get('datasetDigest') or '?')[:12]}...)\n"
              f"  trained {entry.get('trainingJob')} from {entry.get('startingModel')} against reference "
              f"{entry.get('referenceModel')} -> {entry.get('trainedModel')}\n"
              f"  gate {entry.get('evaluation')}: {entry.get('verdict')}; "
              f"{'promoted' if entry.get('promoted') else 'not promoted'}: {entry.get('message')}")
    print(f"stopped: {status.get('stopReason')}: {status.get('message')}")
    print(f"ModelDeployment {status.get('servingDeployment')} serves {status.get('servingModel')}")


def run_demo_loop(workdir: Path, config: LoopDemoConfig | None = None) -> int:
    """0 when the loop ran as designed and its first round was promoted (a later round refused by the gate is a
    result, reported); 2 when the gate refused round 1 (no improvement to show); 1 when the loop or one of its
    children failed, or it did not finish within ``config.timeout`` seconds."""
    config = config or LoopDemoConfig()
    workdir = workdir.resolve()
    with demo_cluster(workdir, NAMESPACE) as env:
        build_starting_policy(env, steps=config.warmup_steps)
        loop = resource(LOOP_KIND.kind, LOOP, loop_spec(config, free_port(), free_port()))
        apply(env.custom, NAMESPACE, [loop], "loop.yaml")
        final = follow(env.custom, NAMESPACE, lambda: _verdict(env.custom), config.timeout, env.started)
        loop = _read_loop(env.custom)
        rounds = round_figures(loop)
        if rounds:
            _show_lineage(loop)
            print("\n== per round: the gate's DPOEvaluation, the trained policy (candidate) against the policy served "
                  "during the round (baseline), mean move value on held-out positions ==")
            print("\n".join(table(rounds)))
            plot = write_plot(rounds, workdir / PLOT)
            print(f"\nscore per round: {plot}")
        print(f"\ndone in {time.monotonic() - env.started:.0f}s; volumes and pod logs under {workdir}")
    if final != "done":
        print(f"\nloop stopped: {final}")
        return 1
    refused = [r.round for r in rounds if not r.promoted]
    if refused:
        print(f"the gate refused round {refused[0]}: its policy was not better than the one serving, so the loop "
              "stopped there and the serving deployment kept the previous policy")
    return 2 if not rounds or not rounds[0].promoted else 0
