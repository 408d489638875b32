"""DPO on a GPU: our trainer (DDP and FSDP2 code paths) vs TRL's DPOTrainer, a 1B-class Llama in bf16.

Model: Llama 3.2 1B's shape (hidden 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192, vocab 128256, tied
embeddings; 1.24 B parameters), random init, nothing downloaded. Data: 512 synthetic pairs, prompts of 512
tokens, chosen and rejected of 256 tokens (fixed lengths, so every batch holds the same tokens), 32 held out.
All weights trained; fp32 master weights and AdamW state, bf16 compute (ours: autocast, FSDP: its
mixed-precision policy; TRL: ``bf16=True``); batch 8 pairs; 40 steps (the first 5 left out of the loop rate);
AdamW 1e-6, constant; clip 1.0; beta 0.1; no gradient checkpointing. TRL 1.16 runs with a reference model
copy (its default) and with ``precompute_ref_log_probs=True``. Compiled runs: ours compiles each decoder layer
(``local.compile``), TRL the whole model (``torch_compile=True``, the Trainer's option); compilation happens in the
warm-up steps, which the loop rate leaves out (the end-to-end rate includes it).

MFU counts the FLOPs a run's layout needs: 6 x (non-embedding parameters) per token computed for the body,
causal attention (``flops_per_pair``), the LM head 6 x hidden x vocab for each completion token (the only
positions whose logits DPO uses). Our default layout computes each prompt once (shared prompt), so it needs fewer
FLOPs a pair than two sequences; tokens/s count every pair as two sequences for every run (time for the same
data). The peak is the H100 SXM's dense bf16 989 TFLOP/s (override with --peak-tflops). Skips without CUDA.
Run: `python bench/bench_gpu.py` (needs the [workload] extra and trl==1.16.0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dpo_bench import Setup, child, make_data, rates, run, tokens_per_pair  # noqa: E402

SETUP = Setup(pairs=512, validation=32, prompt=(512, 512), response=(255, 255), batch=8, steps=40, learning_rate=1e-6,
              precision="bf16", max_length=1024, skip=5)
SHAPE = {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
         "intermediate_size": 8192, "vocab_size": 128256, "tie_word_embeddings": True, "head_dim": 64}
RUNS = [("ours", "ours (ddp)", {"strategy": "ddp"}), ("ours", "ours (ddp, compiled)", {"strategy": "ddp", "compile": True}),
        ("ours", "ours (fsdp)", {"strategy": "fsdp"}),
        ("ours", "ours (ddp, 2-seq)", {"strategy": "ddp", "shared_prompt": False}),
        ("trl", "TRL", {}), ("trl", "TRL precompute", {"precompute_ref_log_probs": True}),
        ("trl", "TRL precompute, compiled", {"precompute_ref_log_probs": True, "torch_compile": True})]


def build_model(path: Path) -> int:
    """The 1B shape with the char-level tokenizer of the tests' tiny model; returns non-embedding parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.tinymodel import build_tiny_model

    build_tiny_model(path)  # the tokenizer (ids past its alphabet are never produced)
    config = LlamaConfig(**SHAPE, max_position_embeddings=4096, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)  # a bf16 checkpoint, as released models are
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()


def flops_per_pair(body: int, shared_prompt: bool) -> float:
    """Training FLOPs (forward + backward) one pair needs: two sequences of prompt + response + EOS, or with the
    shared-prompt layout the prompt once and both responses. A token attending to ``c`` positions costs
    12 x layers x hidden x c in attention (scores and values, forward and backward)."""
    prompt, response = SETUP.prompt[0], SETUP.response[0] + 1
    hidden, layers, vocab = SHAPE["hidden_size"], SHAPE["num_hidden_layers"], SHAPE["vocab_size"]
    contexts = [*range(1, prompt + 1), *range(prompt + 1, prompt + response + 1)]  # prompt + chosen
    contexts += [*([] if shared_prompt else range(1, prompt + 1)), *range(prompt + 1, prompt + response + 1)]
    return len(contexts) * 6 * body + 12 * layers * hidden * sum(contexts) + 2 * response * 6 * hidden * vocab


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--only", nargs="*", help="labels to run (default: all)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA GPU here; skipped")
        return
    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}; {SETUP}; shape {SHAPE}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        body = build_model(workdir / "model")
        make_data(workdir / "data", SETUP)
        per_pair = tokens_per_pair(workdir)
        results = {}
        for runner, label, options in RUNS:
            if args.only and label not in args.only:
                continue
            results[label] = run(__file__, runner, workdir, SETUP, options, label.replace(" ", "-").replace("(", "").replace(")", ""))
            if results[label]:
                loop, e2e = rates(results[label], SETUP, per_pair)
                mfu = loop / per_pair * flops_per_pair(body, results[label].get("shared_prompt", False)) / (args.peak_tflops * 1e12)
                print(f"  {label}: loop {loop:,.0f} tok/s, MFU {mfu:.1%}, e2e {e2e:,.0f} tok/s, "
                      f"peak GPU {results[label]['peak_gpu_gib']:.1f} GiB", flush=True)
    print(f"\n{name}: {body / 1e9:.2f} B non-embedding parameters, {per_pair:.0f} tokens a pair")
    print(f"{'':<26}{'loop tok/s':>11}{'MFU':>7}{'e2e tok/s':>11}{'peak GPU GiB':>14}{'loss, last 10':>15}{'val loss':>10}")
    for label, result in results.items():
        if result is None:
            continue
        loop, e2e = rates(result, SETUP, per_pair)
        mfu = loop / per_pair * flops_per_pair(body, result.get("shared_prompt", False)) / (args.peak_tflops * 1e12)
        print(f"{label:<26}{loop:>11,.0f}{mfu:>7.1%}{e2e:>11,.0f}{result['peak_gpu_gib']:>14.1f}"
              f"{result['train_loss_tail']:>15.4f}{result['val_loss']:>10.4f}")


if __name__ == "__main__":
    main()
