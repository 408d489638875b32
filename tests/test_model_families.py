"""Completion log-probs and their gradients equal an independent computation from each model's full forward, for
every decoder family people fine-tune, in both layouts, with SDPA and eager attention.

Tiny configs are built offline from transformers' config classes (2 layers, hidden 32) with the features that
change the logits or the attention pattern turned on: Gemma 2/3's final logit softcapping, Cohere's logit scale,
Granite's logits scaling and multipliers, Llama 3's rope scaling, and sliding windows (4 tokens) on Mistral,
Mixtral, Qwen2/3 (mixed local/global layers), Qwen3-MoE, Gemma 2/3 (alternating) and Phi-3, with prompts and
responses longer than the window. The reference scores each sequence alone (no padding, no custom mask) through
``model(...).logits``; MoE families add ``router_aux_loss_coef`` times the model's own ``aux_loss`` over the 2B
sequences, as TRL 1.16 does. The LM head runs in chunks of 3 tokens, so chunk boundaries and the recomputation in
backward are exercised. Tolerances (fp32): the weighted sum of log-probs within 2e-5 absolute + 1e-5 relative;
each gradient element within 1e-5 + 1e-4 of its tensor's largest element, absolute, + 1e-3 relative (the shared
layout adds in another order; a missed post-head step or window is off by orders of magnitude more). A transformers upgrade that adds a post-head step or changes how masks are applied
fails here for the family concerned.
"""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from dpo_operator.train.data import EncodedPair, collate  # noqa: E402
from dpo_operator.train.logprobs import CompletionLogps, custom_mask_problem, layer_windows  # noqa: E402

pytestmark = pytest.mark.workload

VOCAB, WINDOW = 64, 4
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0,
          "bos_token_id": 1, "eos_token_id": 2}
MOE = {"num_experts_per_tok": 2, "router_aux_loss_coef": 0.05}
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama3": ("LlamaConfig", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 16}}),
    "mistral": ("MistralConfig", {"sliding_window": WINDOW}),
    "mixtral": ("MixtralConfig", {"sliding_window": WINDOW, "num_local_experts": 4, **MOE}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1}),
    "qwen3": ("Qwen3Config", {"use_sliding_window": True, "sliding_window": WINDOW, "max_window_layers": 1,
                              "head_dim": 8}),
    "qwen3_moe": ("Qwen3MoeConfig", {"use_sliding_window": True, "sliding_window": WINDOW, "num_experts": 4,
                                     "moe_intermediate_size": 32, "head_dim": 8, **MOE}),
    "gemma": ("GemmaConfig", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", {"head_dim": 8, "sliding_window": WINDOW, "final_logit_softcapping": 0.5,
                                "attn_logit_softcapping": 2.0, "query_pre_attn_scalar": 8}),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 8, "sliding_window": WINDOW, "final_logit_softcapping": 0.5,
                                    "layer_types": ["sliding_attention", "full_attention"], "query_pre_attn_scalar": 8}),
    "phi3": ("Phi3Config", {"sliding_window": WINDOW}),
    "cohere": ("CohereConfig", {"logit_scale": 8.0}),
    "cohere2": ("Cohere2Config", {"logit_scale": 8.0, "sliding_window": WINDOW,
                                  "layer_types": ["sliding_attention", "full_attention"]}),
    "granite": ("GraniteConfig", {"logits_scaling": 0.125, "embedding_multiplier": 2.0, "residual_multiplier": 0.5,
                                  "attention_multiplier": 0.2}),
    "olmo2": ("Olmo2Config", {}),
}
# prompts of 2-9 tokens and responses of 1-6: several longer than the window, padding in every segment
PAIRS = [EncodedPair([1, 10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 2], [30, 31, 2]),
         EncodedPair([1, 16], [24, 25, 26, 27, 28, 2], [32, 2]),
         EncodedPair([1, 17, 18, 19, 40, 41, 42, 43, 44], [29, 2], [33, 34, 35, 36, 37, 2]),
         EncodedPair([1, 45, 46], [47], [48, 49, 50, 51])]
SEQUENCE_WEIGHTS = torch.linspace(1.0, 2.0, 2 * len(PAIRS))  # every sequence's gradient counts, differently


def build(family: str, attention: str) -> Any:
    name, options = FAMILIES[family]
    config = getattr(transformers, name)(**{**COMMON, **options})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    with torch.no_grad():  # logits large enough that a missed post-head step (softcap, scale) shows
        model.get_output_embeddings().weight.normal_(0, 1.0)
    return model.eval()  # no dropout: both computations see the same function


def reference(model: Any) -> torch.Tensor:
    """sum_s w_s * log p(response_s | prompt_s), each sequence alone through the full forward, plus the MoE loss."""
    sequences = [(p.prompt, p.chosen) for p in PAIRS] + [(p.prompt, p.rejected) for p in PAIRS]
    total = torch.zeros(())
    for weight, (prompt, response) in zip(SEQUENCE_WEIGHTS, sequences, strict=True):
        ids = torch.tensor([prompt + response])
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1)
        picked = logps[torch.arange(len(prompt) - 1, ids.shape[1] - 1), ids[0, len(prompt):]]
        total = total + weight * picked.sum()
    coefficient = getattr(model.config, "router_aux_loss_coef", 0.0) if hasattr(model.config, "output_router_logits") else 0.0
    if coefficient:
        width = max(len(p) + len(r) for p, r in sequences)
        ids = torch.tensor([p + r + [0] * (width - len(p) - len(r)) for p, r in sequences])
        mask = torch.tensor([[1] * (len(p) + len(r)) + [0] * (width - len(p) - len(r)) for p, r in sequences])
        total = total + coefficient * model(input_ids=ids, attention_mask=mask, output_router_logits=True).aux_loss
    return total


def ours(model: Any, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    scorer = CompletionLogps(model, logits_per_chunk=3 * VOCAB)  # chunks of 3 tokens
    sums, counts, router = scorer(**collate(PAIRS, list(range(len(PAIRS))), 0, shared_prompt=shared).inputs(),
                                  router_loss=True)
    return (SEQUENCE_WEIGHTS * sums).sum() + scorer.router_aux_loss_coef * router, counts


def gradients(model: Any, value: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad()
    value.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def supported(family: str) -> list[str]:
    model_class = transformers.AutoModelForCausalLM._model_mapping[getattr(transformers, FAMILIES[family][0])]
    return ["sdpa", "eager"] if model_class._supports_sdpa else ["eager"]  # Gemma 2: eager only (softcapped scores)


@pytest.mark.parametrize(("family", "attention"), [(f, a) for f in sorted(FAMILIES) for a in supported(f)])
def test_log_probs_and_gradients_equal_the_models_own_forward(family: str, attention: str) -> None:
    model = build(family, attention)
    assert custom_mask_problem(model) is None  # the shared-prompt layout is used for every family listed
    expected = reference(model)
    expected_grads = gradients(model, expected)
    for shared in (True, False):
        value, counts = ours(model, shared)
        assert counts.tolist() == [5, 6, 2, 1, 3, 2, 6, 4]
        torch.testing.assert_close(value.detach(), expected.detach(), atol=2e-5, rtol=1e-5,
                                   msg=lambda m: f"{family} {attention} shared={shared}: {m}")  # noqa: B023
        grads = gradients(model, value)
        assert grads.keys() == expected_grads.keys() and grads
        for name, grad in grads.items():
            scale = float(expected_grads[name].abs().max())
            torch.testing.assert_close(grad, expected_grads[name], atol=1e-5 + 1e-4 * scale, rtol=1e-3,
                                       msg=lambda m: f"{family} {attention} shared={shared} {name}: {m}")  # noqa: B023


def test_windows_reach_the_mask_per_layer_type() -> None:
    """The shared-prompt test above is only meaningful where a window exists and is shorter than the sequences."""
    windows = {family: layer_windows(build(family, "eager").config) for family in ("mistral", "qwen2", "gemma2", "gemma3")}  # noqa: E501
    assert windows["mistral"] == {"*": WINDOW}
    assert windows["qwen2"] == {"full_attention": None, "sliding_attention": WINDOW}  # mixed local/global layers
    assert windows["gemma2"] == windows["gemma3"] == {"sliding_attention": WINDOW, "full_attention": None}
    assert max(len(p.prompt) + max(len(p.chosen), len(p.rejected)) for p in PAIRS) > 3 * WINDOW


def test_a_post_head_step_the_code_never_heard_of_is_applied() -> None:
    """A model class whose forward transforms its logits in a way no list of known steps holds: the log-probs
    still follow it, because they come from the model's own forward."""

    class Unheard(transformers.LlamaForCausalLM):
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            output = super().forward(*args, **kwargs)
            output.logits = 3.0 * torch.sin(output.logits) + output.logits.roll(1, dims=-1)
            return output

    torch.manual_seed(0)
    model = Unheard(transformers.LlamaConfig(**COMMON)).eval()
    expected = reference(model)
    for shared in (True, False):
        value, _ = ours(model, shared)
        torch.testing.assert_close(value.detach(), expected.detach(), atol=2e-5, rtol=1e-5)


def test_layouts_a_mask_cannot_express_are_refused() -> None:
    llama4_like = transformers.LlamaConfig(**COMMON)
    llama4_like.attention_chunk_size = 8
    hybrid = transformers.LlamaConfig(**COMMON)
    hybrid.layer_types = ["linear_attention", "full_attention"]
    for config, reason in ((llama4_like, "chunked attention"), (hybrid, "linear_attention")):
        model = transformers.LlamaForCausalLM(config)
        assert reason in (custom_mask_problem(model) or "")
    flash = build("llama3", "sdpa")
    flash.config._attn_implementation = "flash_attention_2"
    assert "padding masks only" in (custom_mask_problem(flash) or "")


def test_log_probs_without_gradients_equal_those_with(tmp_path: Any) -> None:
    """The reference pass (no gradients, no checkpointing) scores as the training forward does."""
    model = build("gemma2", "eager")
    batch = collate(PAIRS, list(range(len(PAIRS))), 0, shared_prompt=True)
    scorer = CompletionLogps(model, logits_per_chunk=3 * VOCAB)
    with_grad, _ = scorer(**batch.inputs())
    with torch.no_grad():
        without, _ = scorer(**batch.inputs())
        whole, _ = CompletionLogps(model)(**batch.inputs())  # one chunk
    torch.testing.assert_close(without, with_grad.detach(), atol=1e-6, rtol=0)
    torch.testing.assert_close(whole, without, atol=1e-5, rtol=0)
