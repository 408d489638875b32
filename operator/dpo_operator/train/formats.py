"""Preference row formats people already have, normalised to ours: ``prompt``, ``chosen_response``,
``rejected_response`` (each a string, or the prompt a list of chat messages and the responses lists of assistant
messages for conversational rows).

- ``nemo``: ours (and NeMo Customizer's): ``prompt``, ``chosen_response``, ``rejected_response``.
- ``trl``: TRL's preference rows: ``chosen``, ``rejected`` and an optional ``prompt``, as text (standard) or as
  message lists (conversational); without ``prompt`` the prompt is implicit: the common prefix of chosen and
  rejected, extracted as TRL's ``extract_prompt`` does.
- ``helpsteer3``: ``context`` (messages), ``response1``, ``response2``, ``overall_preference`` (-3..3, negative:
  response1 is better), as NeMo RL's HelpSteer3 formatter reads it; a tie (0) is dropped and counted instead of
  becoming a chosen == rejected row (what NeMo RL's formatter does).
- ``tulu3``: AllenAI's Tulu 3 preference mixture: ``chosen`` and ``rejected`` are whole conversations ending in
  the assistant's answer; the prompt is the conversation before it (the same in both).
- an explicit column mapping (``columns``): the named columns read as TRL's rows.

Everything here is pure Python (no torch): the operator-side data check and the customizer upload use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

FORMATS = ("nemo", "trl", "helpsteer3", "tulu3")
NEMO_KEYS = ("prompt", "chosen_response", "rejected_response")
HELPSTEER3_KEYS = ("context", "response1", "response2", "overall_preference")

Row = dict[str, Any]
# a raw row -> our row, or None when the format drops it (a HelpSteer3 tie); raises ValueError with the problem
Normaliser = Callable[[Mapping[str, Any]], Row | None]


class RowError(ValueError):
    """A preference row (named by file and line or row) that no retry can fix: the trainer exits with code 3."""


class FormatError(ValueError):
    """No format fits the columns (or the chosen one lacks some): a spec or data problem no retry fixes."""


def prompt_problem(prompt: Any) -> str | None:
    """Why ``prompt`` is neither text nor a list of chat messages (role and text content), or None."""
    if isinstance(prompt, str):
        return None
    if not isinstance(prompt, list):
        return f"must be a string or a list of chat messages, not {type(prompt).__name__}"
    return messages_problem(prompt)


def messages_problem(messages: list[Any]) -> str | None:
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            return f"message {number} must be an object with a string 'role'"
        if not isinstance(message.get("content"), (str, type(None))):
            return f"message {number}'s content must be a string or null, not {type(message['content']).__name__}"
    return None


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict) and "role" in value[0]


def _response(value: Any, key: str) -> str | list[dict[str, Any]]:
    """A response: text, or a non-empty list of messages (conversational)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        problem = messages_problem(value)
        if problem is None:
            return value
        raise ValueError(f"{key}: {problem}")
    raise ValueError(f"{key} must be a string or a list of chat messages, not {type(value).__name__}")


def _prompt(value: Any, key: str) -> str | list[dict[str, Any]]:
    problem = prompt_problem(value)
    if problem:
        raise ValueError(f"{key} {problem}")
    return value  # type: ignore[no-any-return]


def _lacks(row: Mapping[str, Any], keys: Sequence[str]) -> None:
    missing = [key for key in keys if key not in row]
    if missing:
        raise ValueError(f"row lacks {missing}")


def nemo(row: Mapping[str, Any]) -> Row:
    _lacks(row, NEMO_KEYS)
    for key in ("chosen_response", "rejected_response"):
        if not isinstance(row[key], str):
            raise ValueError(f"{key} must be a string, not {type(row[key]).__name__}")
    problem = prompt_problem(row["prompt"])
    if problem:
        raise ValueError(f"prompt {problem}")
    return {"prompt": row["prompt"], "chosen_response": row["chosen_response"],
            "rejected_response": row["rejected_response"]}


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """TRL's ``extract_prompt``: the longest common prefix (messages or characters, without a trailing space)."""
    index = 0
    for index in range(min(len(chosen), len(rejected))):
        if chosen[index] != rejected[index]:
            if chosen[index - 1] == " ":
                index -= 1
            break
    else:
        index = min(len(chosen), len(rejected))
    return chosen[:index], chosen[index:], rejected[index:]


def mapped(prompt_key: str | None, chosen_key: str, rejected_key: str) -> Normaliser:
    """TRL's rows under these column names (prompt None: implicit in chosen and rejected)."""

    def normalise(row: Mapping[str, Any]) -> Row:
        _lacks(row, [k for k in (prompt_key, chosen_key, rejected_key) if k is not None])
        chosen, rejected = row[chosen_key], row[rejected_key]
        if prompt_key is None:
            if _is_messages(chosen) != _is_messages(rejected) or not isinstance(chosen, (str, list)):
                raise ValueError(f"{chosen_key} and {rejected_key} must both be text or both message lists")
            prompt, chosen, rejected = extract_prompt(chosen, rejected)  # may be empty: see data.encode
        else:
            prompt = _prompt(row[prompt_key], prompt_key)
        return {"prompt": prompt, "chosen_response": _response(chosen, chosen_key),
                "rejected_response": _response(rejected, rejected_key)}

    return normalise


def helpsteer3(row: Mapping[str, Any]) -> Row | None:
    _lacks(row, HELPSTEER3_KEYS)
    preference = row["overall_preference"]
    if not isinstance(preference, (int, float)) or isinstance(preference, bool):
        raise ValueError(f"overall_preference must be a number, not {type(preference).__name__}")
    if preference == 0:
        return None  # a tie: no preference to learn
    context = row["context"]
    prompt = _prompt(context, "context")
    first, second = _response(row["response1"], "response1"), _response(row["response2"], "response2")
    chosen, rejected = (first, second) if preference < 0 else (second, first)
    return {"prompt": prompt, "chosen_response": chosen, "rejected_response": rejected}


def tulu3(row: Mapping[str, Any]) -> Row:
    _lacks(row, ("chosen", "rejected"))
    chosen, rejected = row["chosen"], row["rejected"]
    for key, value in (("chosen", chosen), ("rejected", rejected)):
        if not _is_messages(value) or value[-1].get("role") != "assistant":
            raise ValueError(f"{key} must be a conversation (messages) ending with the assistant's answer")
        problem = messages_problem(value)
        if problem:
            raise ValueError(f"{key}: {problem}")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("chosen and rejected must share the conversation before the last (assistant) message")
    prompt = chosen[:-1]
    if not prompt:
        raise ValueError("chosen holds only the answer: the conversation before it (the prompt) is empty")
    return {"prompt": prompt, "chosen_response": chosen[-1:], "rejected_response": rejected[-1:]}


def detect(columns: Sequence[str], first: Mapping[str, Any] | None) -> str:
    """The format of rows with these columns (and this first row), or a FormatError naming the columns found."""
    present = set(columns)
    if set(NEMO_KEYS) <= present:
        return "nemo"
    if set(HELPSTEER3_KEYS) <= present:
        return "helpsteer3"
    if {"chosen", "rejected"} <= present:
        chosen = (first or {}).get("chosen")
        whole = _is_messages(chosen) and chosen[0].get("role") != "assistant"
        return "tulu3" if whole and "prompt" in present else "trl"
    raise FormatError(
        f"no known preference format fits the columns found ({', '.join(sorted(present)) or 'none'}): expected "
        "prompt/chosen_response/rejected_response (nemo), [prompt]/chosen/rejected (trl or tulu3) or "
        "context/response1/response2/overall_preference (helpsteer3); name yours in dataset.columns")


def normaliser(fmt: str, columns: Mapping[str, str | None] | None = None) -> Normaliser:
    """The function that turns a row of ``fmt`` (or of the explicit column mapping) into ours."""
    if columns is not None:
        return mapped(columns.get("prompt"), str(columns["chosen"]), str(columns["rejected"]))
    if fmt == "nemo":
        return nemo
    if fmt == "trl":
        return mapped("prompt", "chosen", "rejected")
    if fmt == "helpsteer3":
        return helpsteer3
    if fmt == "tulu3":
        return tulu3
    raise FormatError(f"unknown dataset format {fmt!r}; one of {', '.join(FORMATS)}")


def for_columns(fmt: str, columns: Sequence[str], first: Mapping[str, Any] | None,
                mapping: Mapping[str, str | None] | None = None) -> tuple[str, Normaliser]:
    """The format to read (``fmt``, or detected when ``auto``) and its normaliser, checked against the columns."""
    if mapping is not None:
        wanted = [v for v in mapping.values() if v]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise FormatError(f"dataset.columns names {missing}, not among the columns found "
                              f"({', '.join(sorted(columns))})")
        return "columns", normaliser(fmt, mapping)
    chosen = detect(columns, first) if fmt == "auto" else fmt
    if chosen == "trl" and "prompt" not in columns:
        return chosen, mapped(None, "chosen", "rejected")
    needed = {"nemo": NEMO_KEYS, "helpsteer3": HELPSTEER3_KEYS, "trl": ("chosen", "rejected"),
              "tulu3": ("chosen", "rejected")}.get(chosen, ())
    missing = [c for c in needed if c not in columns]
    if missing:
        raise FormatError(f"dataset.format {chosen} needs the columns {missing}, not among those found "
                          f"({', '.join(sorted(columns))})")
    return chosen, normaliser(chosen)


def response_text(response: str | list[dict[str, Any]]) -> str:
    """A response as text: the content of its messages, joined (for checks and the Customizer's JSONL)."""
    if isinstance(response, str):
        return response
    return "\n".join(str(m.get("content") or "") for m in response)


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    return prompt if isinstance(prompt, str) else "\n".join(str(m.get("content") or "") for m in prompt)
