"""NVIDIA's own DPO example (``dpo_tic_tac_toe``, NAT 1.9.0), unchanged, as a DPOCollection on the emulated cluster.

The example's workflow code and ``config.yml`` are copied unchanged in ``tests/fixtures/nat_dpo_tic_tac_toe``
(its dataset, a Git LFS pointer upstream, is ours). The real operator runs the collection Job; the local executor
runs its pod, which hands itself over to the Python 3.12 NAT environment (``$DPO_NAT_PYTHON``) as the workload
image's pods do. The config's ``nim`` LLM is served by a local OpenAI-compatible stand-in that plays random legal
moves in the example's XML answer format. The pairs must equal what NAT's own ``dpo_traj_builder``
(nvidia-nat-nemo-customizer) yields from the same recorded steps, minus ties and identical texts (by design).

It skips when no NAT environment exists: ``.ci/nat-env`` builds ``.venv-nat``; or set ``DPO_TEST_NAT_PYTHON``.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from dpo_operator.embedded.http_thread import AppThread
from tests.kubehelpers import Kube

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = Path(__file__).parent / "fixtures" / "nat_dpo_tic_tac_toe" / "src"
CONFIG = EXAMPLE / "dpo_tic_tac_toe" / "configs" / "config.yml"
DATASET = EXAMPLE / "dpo_tic_tac_toe" / "data" / "data.json"
RECORDER = Path(__file__).parent / "fixtures" / "nat_step_recorder"
NATREF = Path(__file__).parent / "natplugin"
BOARD_ROW = re.compile(r"^([1-3]) ([XO_]) ([XO_]) ([XO_])$", re.MULTILINE)


def nat_python() -> str:
    """The NAT 3.12 environment's interpreter with NAT's DPO builder and this package, or skip."""
    candidate = os.environ.get("DPO_TEST_NAT_PYTHON") or str(ROOT / ".venv-nat" / "bin" / "python")
    if not Path(candidate).is_file():
        pytest.skip(f"no NAT Python 3.12 environment at {candidate} (.ci/nat-env builds one; or set DPO_TEST_NAT_PYTHON)")
    probe = "import dpo_operator, nat.plugins.customizer.dpo.trajectory_builder, nat.plugins.eval.runtime.evaluate"
    checked = subprocess.run([candidate, "-c", probe], capture_output=True, text=True, check=False)
    if checked.returncode != 0:
        pytest.skip(f"{candidate} lacks NAT's DPO builder or dpo_operator: {checked.stderr.strip()[-300:]}")
    return candidate


class TicTacToeLLM(AppThread):
    """An OpenAI-compatible chat endpoint that answers the example's prompts with a random legal move as its XML."""

    def __init__(self, seed: int = 7) -> None:
        super().__init__()
        self._rng = random.Random(seed)
        self.requests = 0

    def move(self, messages: list[dict[str, Any]]) -> str:
        last = str(messages[-1].get("content", "")) if messages else ""
        cells = [(int(row) - 1, col) for row, *marks in BOARD_ROW.findall(last)
                 for col, mark in enumerate(marks) if mark == "_"]
        if not cells:
            return "no board in the prompt"
        row, col = self._rng.choice(cells)
        return f"<move>\n  <row>{row + 1}</row>\n  <col>{col + 1}</col>\n</move>"

    async def _completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests += 1
        return web.json_response({
            "id": f"cmpl-{self.requests}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.move(body.get("messages") or [])}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 1, "total_tokens": 1}})

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._completions)


def nat_builder_pairs(python: str, recorded: list[Path]) -> list[dict[str, Any]]:
    """NAT's ``dpo_traj_builder``'s pairs, run in the NAT environment with the example's builder settings on each
    recorded run (NAT builds one run's pairs at a time)."""
    builder = yaml.safe_load(CONFIG.read_text())["trajectory_builders"]["dpo_builder"]
    options = {"exhaustive": builder["exhaustive_pairs"], "min_score_diff": builder["min_score_diff"],
               "max_pairs_per_turn": builder["max_pairs_per_turn"]}
    script = ("import json, sys; from natref import nat_builder_pairs; "
              "runs, options = json.loads(sys.stdin.read()); "
              "print(json.dumps([p for path in runs for p in nat_builder_pairs("
              "json.load(open(path)), 'dpo_candidate_move', **options)]))")
    done = subprocess.run([python, "-c", script], input=json.dumps([[str(p) for p in recorded], options]),
                          capture_output=True, text=True, check=True, cwd=NATREF,
                          env={**os.environ, "PYTHONPATH": str(NATREF)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def as_nat_adapter_formats(pairs: list[dict[str, Any]], full: bool) -> list[dict[str, Any]]:
    """The prompts as NAT's trainer adapter writes them (``NeMoCustomizerTrainerAdapter._format_prompt``): without
    ``use_full_message_history`` only the last message's content, else role and content of each message."""

    def formatted(prompt: Any) -> Any:
        if isinstance(prompt, str):
            return [{"role": "user", "content": prompt}] if full else prompt
        if full:
            return [{"role": m["role"], "content": m["content"]} for m in prompt]
        return prompt[-1]["content"] if prompt else ""

    return [{**p, "prompt": formatted(p["prompt"])} for p in pairs]


def as_set(rows: list[dict[str, Any]]) -> set[str]:
    return {json.dumps([r["prompt"], r.get("chosen", r.get("chosen_response")),
                        r.get("rejected", r.get("rejected_response"))], sort_keys=True) for r in rows}


@pytest.mark.timeout(480)
@pytest.mark.parametrize("full_history", [None, True], ids=["as-configured", "full-history"])
def test_nvidias_dpo_example_runs_unchanged_and_its_pairs_are_nats(
        kube: Kube, namespace: str, operator: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        full_history: bool | None) -> None:
    """As the example configures it (its adapter's ``use_full_message_history: false``), and with the CR's
    ``useFullMessageHistory: true`` winning over the config."""
    kube.require_emulated()  # runs a kubelet stand-in
    python = nat_python()
    from dpo_operator.embedded.executor import LocalExecutor

    recorded_dir = tmp_path / "recorded"
    # the example's package is "installed in the image" (on the pod's path, found by its entry point); the recorder
    # keeps the steps the collector reads (DPO_TEST_RECORD_STEPS below)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(RECORDER), str(EXAMPLE),
                                                                     os.environ.get("PYTHONPATH")])))
    for unset in ("CUSTOMIZER_HOST", "DATASTORE_HOST", "DPO_NAT_HANDED_OVER"):
        monkeypatch.delenv(unset, raising=False)
    kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "ttt"}, "data": {
        "config.yml": CONFIG.read_text(), "data.json": DATASET.read_text()}})
    kube.claims(namespace, "dpo-data")  # a missing claim keeps the pod Pending
    with TicTacToeLLM() as llm, LocalExecutor(kube.api, tmp_path / "cluster", namespace) as executor:
        env = {"NVIDIA_BASE_URL": f"{llm.root_url}/v1",  # where the config's `nim` LLM (no base_url) is served
               "DPO_NAT_PYTHON": python,  # the workload image's ENV (docker/workload.Dockerfile)
               "DPO_TEST_RECORD_STEPS": str(recorded_dir)}
        spec = {"workflow": {"nat": {"configMapRef": {"name": "ttt", "key": "config.yml"},
                                     "datasetRef": {"name": "ttt", "key": "data.json"}}},
                "output": {"pvc": {"claimName": "dpo-data", "path": "/ttt"}},
                "template": {"env": [{"name": k, "value": v} for k, v in env.items()]}}
        if full_history is not None:
            spec["useFullMessageHistory"] = full_history
        kube.create("DPOCollection", namespace, "ttt", spec)
        done = kube.wait_phase("DPOCollection", namespace, "ttt", "Succeeded", timeout=300)
    assert llm.requests > 0  # the trained player's moves came from the LLM
    status = done["status"]
    assert status["runsCompleted"] == 1 and status["invalidCandidates"] == 0  # trainers' num_runs: 1
    dataset = executor.pvc_dir("dpo-data") / "ttt"
    rows = [json.loads(line) for name in ("training/training_file.jsonl", "validation/validation_file.jsonl")
            for line in (dataset / name).read_text().splitlines()]
    recorded = sorted(recorded_dir.glob("run-*.json"))
    assert len(recorded) == 1
    reference = nat_builder_pairs(python, recorded)
    adapter = yaml.safe_load(CONFIG.read_text())["trainer_adapters"]["nemo_customizer_trainer_adapter"]
    full = adapter["use_full_message_history"] if full_history is None else full_history
    kept = [p for p in as_nat_adapter_formats(reference, full) if p["score_diff"] > 0 and p["chosen"] != p["rejected"]]
    assert rows and as_set(rows) == as_set(kept)
    metrics = json.loads((dataset / "metrics.json").read_text())
    assert any("custom_step_name" in warning for warning in metrics["configWarnings"])  # the example's old key
