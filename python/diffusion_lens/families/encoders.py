"""Text encoders' hidden states as the lens takes them (DESIGN §2), shared by the families: index ``l`` of
``hidden_states`` (0 = embeddings, ``i`` = output of block ``i``), every position, through the
encoder's own final norm where the stock pipeline's output has it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

# The lens's rule for T5 (IF, PixArt, Flux), as the manifest says it.
T5_NORM_RULE = (
    "T5 encoder final_layer_norm applied to hidden_states[l] for l < L; hidden_states[L] is already normed"
)


def final_layer_norm(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """CLIP's final LayerNorm: on ``text_model`` before transformers 5.6 and for
    CLIPTextModelWithProjection; on the flattened CLIPTextModel itself from 5.6 on."""
    owner = getattr(text_encoder, "text_model", text_encoder)
    norm = getattr(owner, "final_layer_norm", None)
    if norm is None:
        raise TypeError(f"{type(text_encoder).__name__} has no final_layer_norm; not a CLIP text encoder?")
    return norm


def token_count(tokenizer: Any, text: str) -> int:
    """Tokens of ``text`` untruncated, special tokens included (verbose=False: no "longer than the
    maximum" log line; the done reply says it)."""
    return len(tokenizer(text, truncation=False, verbose=False).input_ids)


def _hidden_states(
    tokenizer: Any, encoder: torch.nn.Module, text: str, max_length: int, masked: bool, device: torch.device
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Every hidden state of ``text`` tokenized as the stock pipelines do it (padded and truncated to
    ``max_length``, special tokens added; batch of 1), encoded with its attention mask if ``masked``;
    and that mask."""
    tokens = tokenizer(
        [text],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    mask = tokens.attention_mask.to(device)
    output = encoder(
        tokens.input_ids.to(device), attention_mask=mask if masked else None, output_hidden_states=True
    )
    return output.hidden_states, mask


@torch.no_grad()
def clip_hidden_states(
    tokenizer: Any, encoder: torch.nn.Module, text: str, layers: Sequence[int], device: torch.device
) -> dict[int, torch.Tensor]:
    """CLIP / OpenCLIP: ``hidden_states[l]`` through the final LayerNorm for every ``l``, the last
    included (HF CLIP returns them before it); no attention mask unless the encoder's config asks for
    one, as in the stock SD pipeline."""
    masked = getattr(encoder.config, "use_attention_mask", False)
    hidden, _ = _hidden_states(tokenizer, encoder, text, tokenizer.model_max_length, masked, device)
    norm = final_layer_norm(encoder)
    return {layer: norm(hidden[layer]).to(dtype=encoder.dtype, device=device) for layer in layers}


@torch.no_grad()
def t5_hidden_states(
    tokenizer: Any,
    encoder: torch.nn.Module,
    text: str,
    layers: Sequence[int],
    device: torch.device,
    max_length: int,
    masked: bool = True,
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """T5, encoded with its attention mask (unless the stock pipeline encodes without: Flux):
    ``hidden_states[l]`` through the final RMS norm for every ``l`` but the last, which HF T5 returns
    already normed (a second norm would change it); and the mask (batch of 1), which some pipelines take
    with the embeddings (PixArt)."""
    hidden, mask = _hidden_states(tokenizer, encoder, text, max_length, masked, device)
    norm, last = encoder.encoder.final_layer_norm, len(hidden) - 1
    normed = {layer: hidden[layer] if layer == last else norm(hidden[layer]) for layer in layers}
    return {layer: state.to(dtype=encoder.dtype, device=device) for layer, state in normed.items()}, mask


@torch.no_grad()
def clip_output(tokenizer: Any, encoder: torch.nn.Module, text: str, device: torch.device) -> Any:
    """A CLIP encoder's whole output for ``text`` as SDXL's and Flux's stock pipelines encode it (padded
    and cut to the tokenizer's length, no attention mask): every hidden state as it comes, none normed,
    the pooled output, and for CLIPTextModelWithProjection its projected pooled vector (``text_embeds``)."""
    tokens = tokenizer(
        [text],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    return encoder(tokens.input_ids.to(device), output_hidden_states=True)
