"""The local NIM stand-in (`dpo-operator serve`): OpenAI-compatible answers from a local model and its adapters."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.workload
pytest.importorskip("transformers")

from dpo_operator.embedded.model_server import LocalModel, ModelServer  # noqa: E402
from dpo_operator.embedded.tiny_model import CHAT_TEMPLATE, build_tiny_model  # noqa: E402
from dpo_operator.serving.probe import check_endpoint  # noqa: E402


def test_serves_the_model_and_its_lora_adapter(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = build_tiny_model(tmp_path / "base", chat_template=CHAT_TEMPLATE)
    adapter = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(r=4, target_modules=["q_proj"]))
    adapter.save_pretrained(tmp_path / "loras" / "tuned")

    with ModelServer(LocalModel(str(base), "tiny", str(tmp_path / "loras"))) as server:
        listed = httpx.get(f"{server.url}/models").json()["data"]
        assert [(m["id"], m.get("parent")) for m in listed] == [("tiny", None), ("tuned", "tiny")]
        assert check_endpoint(server.root_url, "tuned").ready
        assert not check_endpoint(server.root_url, "other").ready
        request = {"messages": [{"role": "system", "content": "ignored"}, {"role": "user", "content": "Move?"}],
                   "temperature": 0.0, "max_tokens": 3}
        answers = {name: httpx.post(f"{server.url}/chat/completions", json={**request, "model": name}).json()
                   for name in ("tiny", "tuned")}
        for name, answer in answers.items():
            assert answer["model"] == name and isinstance(answer["choices"][0]["message"]["content"], str)
        greedy_again = httpx.post(f"{server.url}/chat/completions", json={**request, "model": "tiny"}).json()
        assert greedy_again["choices"] == answers["tiny"]["choices"]  # temperature 0 is deterministic
        missing = httpx.post(f"{server.url}/chat/completions", json={**request, "model": "absent"})
        assert missing.status_code == 404 and "absent" in missing.text
