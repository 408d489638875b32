"""Per-sequence log-probabilities of completion tokens: the model's own logits, computed only where needed, in chunks.

- The backbone yields hidden states and only those that predict a completion token go on to the logits.
- The logits come from the model's own forward (its ``ForCausalLM.forward``) with the decoder stood in for by
  the hidden states already computed, so whatever a model does after its LM head (Gemma 2/3's
  ``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's ``logits_scaling``, or the next model's step)
  is done here too: there is no list of post-head steps to keep up to date.
- The selected positions go through that head path in chunks of at most ``logits_per_chunk`` logits (forward and,
  through activation checkpointing of each chunk, backward): no [tokens, vocab] matrix for a whole batch exists,
  so memory stays bounded with vocabularies of 128k-256k.
- In the shared-prompt layout (``data.Batch``) the custom mask carries each layer type's sliding window, measured in
  position ids (the rejected response's positions restart after the prompt), so local/global models score as they
  would two separate sequences; attention kinds a mask cannot express (chunked, recurrent) refuse the layout.
- Mixture-of-experts models add their router load-balancing loss when their config asks for one (as TRL does),
  computed by the model's own forward over the tokens of the 2B sequences (a shared prompt counted twice).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

LOGITS_PER_CHUNK = 2**26  # logits one chunk of completion tokens may hold: 256 MiB in fp32 (256 tokens at 256k)
WINDOWED, FULL = "sliding_attention", "full_attention"


def causal_lm(model: Any) -> Any:
    """The ``...ForCausalLM`` module (a peft model wraps it)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def text_config(model: Any) -> Any:
    config = causal_lm(model).config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def attention_implementation(model: Any) -> str | None:
    return getattr(causal_lm(model).config, "_attn_implementation", None)


def layer_windows(config: Any) -> dict[str, int | None]:
    """The sliding window of each attention layer type the model builds a mask for (None: full attention).

    Models with ``layer_types`` (Gemma 2/3, Qwen2/3, Cohere2, ...) take a mask per type; the others (Mistral,
    Mixtral, Phi-3, Qwen3-MoE) apply ``sliding_window``, when set, to every layer. Raises ``ValueError`` for a
    layer type that a mask cannot express in the shared-prompt layout."""
    window = getattr(config, "sliding_window", None)
    if getattr(config, "attention_chunk_size", None):
        raise ValueError("chunked attention (attention_chunk_size) counts chunks by place in the row")
    types = getattr(config, "layer_types", None)
    if not types:
        return {"*": window}
    unknown = sorted(set(types) - {WINDOWED, FULL})
    if unknown:
        raise ValueError(f"layer types {unknown} are not attention a mask restricts")
    return {kind: (window if kind == WINDOWED else None) for kind in dict.fromkeys(types)}


def custom_mask_problem(model: Any) -> str | None:
    """Why the shared-prompt layout (an arbitrary [B, 1, T, T] mask) cannot be used with ``model``, or None.

    SDPA and eager attention take such a mask; flash-attention kernels take padding masks only."""
    implementation = attention_implementation(model)
    if implementation not in ("sdpa", "eager"):
        return f"attention implementation {implementation!r} takes padding masks only"
    try:
        layer_windows(text_config(model))
    except ValueError as exc:
        return str(exc)
    return None


def supports_custom_masks(model: Any) -> bool:
    return custom_mask_problem(model) is None


def router_loss_coefficient(model: Any) -> float:
    """The weight of a mixture-of-experts model's load-balancing loss, as TRL 1.16 reads it: the config's
    ``router_aux_loss_coef`` where the config declares ``output_router_logits`` (an MoE model), else 0."""
    config = text_config(model)
    if not hasattr(config, "output_router_logits"):
        return 0.0
    return float(getattr(config, "router_aux_loss_coef", 0.0) or 0.0)


class _Computed(nn.Module):
    """Stands in for the decoder inside the model's own forward: returns outputs already computed."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.output


class CompletionLogps(nn.Module):
    """Wraps a causal LM; ``forward`` returns completion log-probs (a module, so DDP and FSDP hooks see it)."""

    def __init__(self, model: nn.Module, logits_per_chunk: int = LOGITS_PER_CHUNK) -> None:
        super().__init__()
        self.model = model
        self.logits_per_chunk = logits_per_chunk
        self.router_aux_loss_coef = router_loss_coefficient(model)
        self._routed = hasattr(text_config(model), "output_router_logits")  # a mixture-of-experts model
        lm = causal_lm(model)
        self._decoder_name = lm.base_model_prefix  # the backbone its forward calls first
        if not isinstance(lm._modules.get(self._decoder_name), nn.Module):
            raise ValueError(f"{type(lm).__name__} has no {self._decoder_name!r} backbone, so its logits cannot be "
                             "computed through its own forward; this architecture is not supported")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None,
                score_positions: torch.Tensor, score_targets: torch.Tensor, score_owner: torch.Tensor,
                sequences: int, token_weights: torch.Tensor | None = None, router_loss: bool = False,
                full_forward: bool = False) -> tuple[torch.Tensor, ...]:
        """(sums, counts) per scored sequence, from a ``data.Batch``'s ``inputs()``.

        ``router_loss``: also return the model's load-balancing loss (a scalar; 0 for a model without one, or whose
        coefficient is 0), over the tokens weighted by ``token_weights``. ``full_forward``: the straightforward
        computation instead (the model's complete forward over every position; full logits): the start-up guard."""
        lm = causal_lm(self.model)
        with_router = router_loss and self.router_aux_loss_coef != 0.0 and torch.is_grad_enabled()
        mask = self._masks(attention_mask, position_ids)
        if full_forward:
            logits = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids).logits
            token_logps = torch.log_softmax(logits.flatten(0, 1)[score_positions].float(), -1).gather(
                -1, score_targets.unsqueeze(-1)).squeeze(-1)
        else:
            extra = {"output_router_logits": True} if with_router else {}
            backbone = lm._modules[self._decoder_name]
            output = backbone(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, **extra)
            hidden = output.last_hidden_state
            selected = hidden.reshape(-1, hidden.shape[-1])[score_positions]  # [M, H]
            token_logps = self._token_logps(selected, score_targets, type(output))
        sums = torch.zeros(sequences, device=input_ids.device, dtype=token_logps.dtype).index_add(0, score_owner, token_logps)
        # not bincount: on a GPU it reads the largest owner back to the host, a wait for the GPU in every forward
        counts = torch.zeros(sequences, device=input_ids.device, dtype=torch.long).index_add(
            0, score_owner, torch.ones_like(score_owner))
        if not router_loss:
            return sums, counts
        if not with_router or full_forward:
            return sums, counts, torch.zeros((), device=input_ids.device)
        weights = token_weights if token_weights is not None else attention_mask
        return sums, counts, self._router_loss(output, weights)

    # -- the model's own head path ---------------------------------------------------------------------------------

    @contextmanager
    def _decoder_replaced(self, output: Any) -> Iterator[Any]:
        lm = causal_lm(self.model)
        decoder = lm._modules[self._decoder_name]
        lm._modules[self._decoder_name] = _Computed(output)
        try:
            yield lm
        finally:
            lm._modules[self._decoder_name] = decoder

    def _logits(self, hidden: torch.Tensor, output_type: type) -> torch.Tensor:
        """The model's logits for hidden states [N, H]: its own forward from the decoder's output on."""
        extra = {"output_router_logits": False} if self._routed else {}  # logits only: no router loss per chunk
        with self._decoder_replaced(output_type(last_hidden_state=hidden.unsqueeze(0))) as lm:
            return lm(use_cache=False, **extra).logits[0]

    def _chunk_logps(self, hidden: torch.Tensor, targets: torch.Tensor, output_type: type) -> torch.Tensor:
        logits = self._logits(hidden, output_type).float()
        return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)

    def _token_logps(self, selected: torch.Tensor, targets: torch.Tensor, output_type: type) -> torch.Tensor:
        """Log-probs of ``targets`` from hidden states [M, H], a chunk at a time; with gradients each chunk's
        logits are recomputed in backward (activation checkpointing), so only one chunk's logits exist at once."""
        vocab = causal_lm(self.model).get_output_embeddings().weight.shape[0]
        chunk = max(1, self.logits_per_chunk // vocab)
        parts = []
        for start in range(0, max(len(selected), 1), chunk):
            hidden, target = selected[start: start + chunk], targets[start: start + chunk]
            if torch.is_grad_enabled() and len(selected) > chunk:
                parts.append(checkpoint(self._chunk_logps, hidden, target, output_type, use_reentrant=False,
                                        preserve_rng_state=False))
            else:
                parts.append(self._chunk_logps(hidden, target, output_type))
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def _router_loss(self, output: Any, weights: torch.Tensor) -> torch.Tensor:
        """The model's load-balancing loss as its own forward computes it from the router logits; ``weights`` [R, T]
        count each token once per scored sequence that holds it (so a shared prompt counts as in two sequences)."""
        hidden = output.last_hidden_state
        computed = type(output)(last_hidden_state=hidden[:, :0], router_logits=output.router_logits)
        with self._decoder_replaced(computed) as lm:
            aux = lm(attention_mask=weights, use_cache=False, output_router_logits=True).aux_loss
        return aux if aux is not None else torch.zeros((), device=hidden.device)

    # -- masks -----------------------------------------------------------------------------------------------------

    def _masks(self, mask: torch.Tensor, position_ids: torch.Tensor | None) -> Any:
        """A padding mask as it is; a custom [R, 1, T, T] mask with each layer type's window applied (a dict by
        layer type where the types differ), additive where the attention is eager."""
        if mask.dim() != 4:
            return mask
        windows = layer_windows(text_config(self.model))
        built = {kind: self._windowed(mask, position_ids, window) for kind, window in windows.items()}
        if attention_implementation(self.model) == "eager":  # eager adds the mask to the scores
            dtype = causal_lm(self.model).get_output_embeddings().weight.dtype
            built = {kind: self._additive(value, dtype) for kind, value in built.items()}
        return next(iter(built.values())) if len(built) == 1 else built

    @staticmethod
    def _windowed(mask: torch.Tensor, position_ids: torch.Tensor | None, window: int | None) -> torch.Tensor:
        if window is None:
            return mask
        if position_ids is None:
            position_ids = torch.arange(mask.shape[-1], device=mask.device).expand(mask.shape[0], -1)
        distance = position_ids.unsqueeze(2) - position_ids.unsqueeze(1)  # query position - key position
        return mask & (distance < window).unsqueeze(1)  # as transformers' sliding_window_overlay, in positions

    @staticmethod
    def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        dtype = dtype if dtype.is_floating_point else torch.float32
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
