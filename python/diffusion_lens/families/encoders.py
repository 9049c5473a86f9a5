"""Text encoders' hidden states as the lens takes them (DESIGN §2), shared by the families: index ``l`` of
``hidden_states`` (0 = embeddings, ``i`` = output of block ``i``), every position, through the
encoder's own final norm where the stock pipeline's output has it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import Family, Readout, TextEncoder

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


def tokenize(tokenizer: Any, text: str, max_length: int, **options: Any) -> Any:
    """``text`` tokenized as the stock pipelines do it: padded and truncated to ``max_length``, special
    tokens added, batch of 1 (``input_ids`` and ``attention_mask``)."""
    return tokenizer(
        [text],
        padding="max_length",
        max_length=max_length,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
        **options,
    )


def token_texts(tokenizer: Any, tokens: Any) -> list[str | None]:
    """Each position's token as the tokenizer writes it (``a</w>``, ``▁cat``), None for the padding after
    the end-of-sequence token (where the attention mask is 0)."""
    texts = tokenizer.convert_ids_to_tokens(tokens.input_ids[0].tolist())
    return [
        text if keep else None for text, keep in zip(texts, tokens.attention_mask[0].tolist(), strict=True)
    ]


def sequence_tokens(tokenizer: Any, text: str, max_length: int) -> list[str | None]:
    """``Family.tokens`` of an encoder whose hidden states are ``prompt_embeds`` position for position."""
    return token_texts(tokenizer, tokenize(tokenizer, text, max_length))


def _hidden_states(
    tokenizer: Any, encoder: torch.nn.Module, text: str, max_length: int, masked: bool, device: torch.device
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Every hidden state of ``text`` tokenized as the stock pipelines do it (``tokenize``), encoded
    with its attention mask if ``masked``; and that mask."""
    tokens = tokenize(tokenizer, text, max_length)
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


def module_path(root: torch.nn.Module, module: torch.nn.Module) -> str:
    """The dotted name of ``module`` inside ``root`` (e.g. ``encoder.final_layer_norm``), for the record."""
    return next(name for name, candidate in root.named_modules() if candidate is module)


def penultimate_clip(name: str, module: torch.nn.Module, pooled: bool) -> TextEncoder:
    """A CLIP encoder whose penultimate hidden state the stock pipeline takes raw, without the final norm
    (SDXL, SD3)."""
    layers = int(module.config.num_hidden_layers)
    return TextEncoder(name, module, layers, layers - 1, None, sequence=True, pooled=pooled)


def pooling_clip(name: str, module: torch.nn.Module) -> TextEncoder:
    """A CLIP encoder that gives the pooled vector only (Flux)."""
    layers = int(module.config.num_hidden_layers)
    return TextEncoder(name, module, layers, layers, None, sequence=False, pooled=True)


def t5_encoder(name: str, module: torch.nn.Module) -> TextEncoder:
    """T5 read at its last hidden state by the stock pipelines, through its final RMS norm."""
    norm = module_path(module, module.encoder.final_layer_norm)
    return TextEncoder(name, module, int(module.config.num_layers), int(module.config.num_layers), norm)


@dataclass(frozen=True)
class ClipReading:
    """A CLIP encoder's hidden states of a text, as SDXL's, SD3's and Flux's stock pipelines encode it
    (padded and cut to the tokenizer's length, no attention mask), none normed, with its tokens."""

    encoder: torch.nn.Module
    hidden_states: tuple[torch.Tensor, ...]
    input_ids: torch.Tensor

    def pooled(self, index: int) -> torch.Tensor:
        """The pooled vector computed from ``hidden_states[index]`` as the encoder computes it from its
        last one: the final LayerNorm, the state at the end-of-text token, and the projection of a
        CLIPTextModelWithProjection. ``index`` = its depth gives the encoder's own pooled output."""
        state = final_layer_norm(self.encoder)(self.hidden_states[index])
        ids = self.input_ids.to(device=state.device, dtype=torch.int)
        eos = self.encoder.config.eos_token_id
        # HF CLIP's rule: configs from before transformers #24773 say eos 2 and mean the highest id.
        position = ids.argmax(dim=-1) if eos == 2 else (ids == eos).int().argmax(dim=-1)
        pooled = state[torch.arange(state.shape[0], device=state.device), position]
        projection = getattr(self.encoder, "text_projection", None)
        return (projection(pooled) if projection is not None else pooled).to(dtype=self.encoder.dtype)


@torch.no_grad()
def clip_read(tokenizer: Any, encoder: torch.nn.Module, text: str, device: torch.device) -> ClipReading:
    """Every hidden state of ``text`` (batch of 1) as a CLIP encoder gives them, with its tokens."""
    input_ids = tokenize(tokenizer, text, tokenizer.model_max_length).input_ids.to(device)
    output = encoder(input_ids, output_hidden_states=True)
    return ClipReading(encoder, output.hidden_states, input_ids)


def pooled_rule(vector: str) -> str:
    """``loaded.lens.pooled``: where ``vector`` (the stock pooled vector, in words) comes from per mode."""
    return (
        f"{vector} of the whole prompt (lens.pooled final, the stock vector); same-layer: pooled from the "
        "hidden state as far back from the encoder's last as the layer is from the stock layer (through "
        "the final norm, at the end-of-text token, projected as stock); empty: the empty prompt's"
    )


def clip_pooled(
    family: Family,
    encoder: TextEncoder,
    tokenizer: Any,
    reading: ClipReading,
    layers: Sequence[int],
    readout: Readout,
) -> dict[int, torch.Tensor]:
    """``encoder``'s pooled vector at each of ``layers`` as ``readout.pooled`` says: pooled from the prompt's
    ``reading`` at ``family.pooled_index``, or for ``empty`` from the empty prompt's last state."""
    if readout.pooled == "empty":
        reading = clip_read(tokenizer, encoder.module, "", reading.input_ids.device)
    return {layer: reading.pooled(family.pooled_index(encoder, layer, readout)) for layer in layers}
