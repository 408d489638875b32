"""A tiny causal LM with a character-level tokenizer, built from a config (nothing downloaded), saved in HF format.

Used by the tests and the embedded demo. The tokenizer's chat template renders only the last message, so a
prompt reads the same at training time (the dataset's prompt string) and at serving time (a chat request).
"""

from __future__ import annotations

import string
from pathlib import Path

CHAT_TEMPLATE = "{{ bos_token }}{{ messages[-1]['content'] }}"


def build_tiny_model(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, vocab_size: int | None = None,
                     heads: int = 4, chat_template: str | None = None) -> Path:
    """``vocab_size`` may exceed the tokenizer's (ids past it are never produced) to give the LM head a realistic size."""
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    alphabet = specials + list(string.printable)
    tokenizer_core = Tokenizer(models.WordLevel({c: i for i, c in enumerate(alphabet)}, unk_token="<unk>"))
    tokenizer_core.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tokenizer_core, pad_token="<pad>", bos_token="<s>",
                                        eos_token="</s>", unk_token="<unk>")
    if chat_template:
        tokenizer.chat_template = chat_template
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=max(vocab_size or 0, len(alphabet)), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                         max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
