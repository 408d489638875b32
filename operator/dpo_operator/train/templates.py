"""Rows to token ids, chat templates done as the tokenizer's own and TRL's preprocessing do them.

- A text prompt with text responses (our collector's rows): the prompt as one user message through the chat
  template with the generation prompt (the template's text tokenized without adding special tokens again: no
  double BOS), or tokenized as is with the tokenizer's special tokens when there is no template; each response is
  its tokens plus EOS.
- Conversational responses (message lists, from TRL, Tulu 3 or HelpSteer3 rows): as TRL does it. The prompt
  messages are rendered with the generation prompt, prompt+chosen and prompt+rejected as whole conversations;
  the completion starts where the rendered prompt and the rendered conversation diverge, so each response is the
  assistant turn exactly as the template renders it, its end-of-turn tokens included (no EOS added).
"""

from __future__ import annotations

from typing import Any

Messages = list[dict[str, Any]]


def _messages(prompt: str | Messages) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def prompt_ids(tokenizer: Any, prompt: str | Messages) -> list[int]:
    messages = _messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    text = prompt if isinstance(prompt, str) else "\n".join(m.get("content") or "" for m in messages)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def _rendered(tokenizer: Any, messages: Messages, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _common(a: list[int], b: list[int]) -> int:
    count = 0
    for x, y in zip(a, b):
        if x != y:
            break
        count += 1
    return count


def conversational_ids(tokenizer: Any, prompt: str | Messages, chosen: Messages,
                       rejected: Messages) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids of a conversational row, as TRL's DPO preprocessing computes them."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("conversational responses (message lists) need a tokenizer with a chat template")
    messages = _messages(prompt)
    start = _rendered(tokenizer, messages, True)
    with_chosen = _rendered(tokenizer, messages + chosen, False)
    with_rejected = _rendered(tokenizer, messages + rejected, False)
    cut = min(_common(start, with_chosen), _common(start, with_rejected))
    return start[:cut], with_chosen[cut:], with_rejected[cut:]


def text_ids(tokenizer: Any, response: str) -> list[int]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return list(tokenizer(response, add_special_tokens=False)["input_ids"]) + eos


def row_ids(tokenizer: Any, row: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(prompt, chosen, rejected) ids of a row in our format, untruncated."""
    chosen, rejected = row["chosen_response"], row["rejected_response"]
    if isinstance(chosen, list) or isinstance(rejected, list):
        as_messages = [r if isinstance(r, list) else [{"role": "assistant", "content": r}] for r in (chosen, rejected)]
        return conversational_ids(tokenizer, row["prompt"], as_messages[0], as_messages[1])
    return prompt_ids(tokenizer, row["prompt"]), text_ids(tokenizer, chosen), text_ids(tokenizer, rejected)
