"""Sana: one decoder-only LLM as the text encoder (Gemma-2, ``Gemma2Model``), read with its attention mask,
a linear-attention DiT, a deep-compression autoencoder (DC-AE, 32x), flow-matching DPM-Solver.

How the stock ``SanaPipeline`` encodes a prompt, and so how the lens does: the prompt is lower-cased and
stripped (or cleaned, ``clean_caption``), the complex human instruction (CHI: a list of lines, joined
with newlines) is put in front of it, and the whole is tokenized with ``<bos>`` first, padded on the
right and cut to ``len(tokenizer.encode(chi)) + max_sequence_length - 2`` tokens; Gemma runs on it with
its attention mask, and ``prompt_embeds`` is its ``last_hidden_state`` (after the final RMS norm
``text_encoder.norm``). Of the positions, ``select_index = [0] + range(-max_sequence_length + 1, 0)``
keeps ``<bos>`` and the last ``max_sequence_length - 1`` (the end of the instruction, the prompt, pads),
for the embeddings and the mask alike. The negative prompt is encoded without the instruction and without
the selection, padded to ``max_sequence_length``.

Layer ``l`` (0..L, L = Gemma's ``num_hidden_layers``) is ``hidden_states[l]`` of that same encoding (same
tokens, instruction, mask and selection), through ``text_encoder.norm`` for ``l < L``; layer L is the
encoder's ``last_hidden_state``, exactly the stock ``prompt_embeds``, so it gives the stock image for the
same seed. Index 0 is the token embeddings times sqrt(hidden_size) (Gemma's normalizer), index ``i`` the
output of decoder layer ``i`` before the final norm; in transformers 5.24 ``hidden_states[L]`` is the normed
output itself (tied to ``last_hidden_state``), unlike HF CLIP, whose hidden states never include its
final norm: the lens takes ``last_hidden_state`` at L, so it does not depend on that. Gemma is causal:
every position sees itself and the positions before it only, so the instruction is read by every prompt
token and no prompt token sees what follows it. The mask goes with every layer
(``prompt_attention_mask``); Sana has no pooled vector.

The unconditional branch is the negative prompt (``""`` by default) encoded as the stock pipeline encodes
it, at layer L, or at layer ``l`` (normed as above) for ``uncond: same-layer``. Sampling is the stock
``SanaPipeline.__call__`` (``Family.sample``) with the stock resolution binning unless it is turned off.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from diffusers import SanaPipeline

from .base import (
    STOCK_READOUT,
    CheckpointError,
    Embeds,
    Family,
    LoadOptions,
    Readout,
    SamplerSettings,
    TextEncoder,
    stock_defaults,
)
from .captions import CLEAN_CAPTION_OPTION, caption_cleaning_missing, preprocess, require_caption_cleaning
from .encoders import module_path, token_count, token_texts, tokenize
from .options import NO_OPTIONS, RESOLUTION_BINNING_OPTION, OptionsSchema, options_schema

# The stock ``__call__``'s defaults: its complex human instruction and Gemma token count.
STOCK_INSTRUCTION: list[str] = list(
    inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
)
MAX_SEQUENCE_LENGTH = 300
# Transformer sample sizes the stock resolution binning has aspect-ratio tables for (4096 .. 512 px).
BINNED_SAMPLE_SIZES = (128, 64, 32, 16)
# The stock pipeline's check_inputs: height and width divisible by 32, whatever the VAE.
SIZE_MULTIPLE = 32
# Named schedulers that run the checkpoints' flow-matching config (flow_prediction on flow sigmas):
# the DPM-Solvers and UniPC; the others refuse prediction_type "flow_prediction".
FLOW_SCHEDULERS = ("default", "dpm-multistep", "dpm-singlestep", "unipc")

NORM_RULE = (
    "Gemma's final RMS norm (text_encoder.norm) applied to hidden_states[l] for l < L; layer L is the "
    "encoder's last_hidden_state (already normed), exactly the stock prompt_embeds"
)


class SanaFamily(Family):
    name = "sana"
    pipeline_classes = ("SanaPipeline",)
    stock_class = SanaPipeline
    accelerator_dtype = "bf16"  # the Sana checkpoints are trained and shipped in bf16 (or fp32)
    schedulers = FLOW_SCHEDULERS
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": options_schema(
            clean_caption={
                **CLEAN_CAPTION_OPTION,
                "default": False,
                "description": "clean captions as IF and PixArt do (needs beautifulsoup4 and ftfy); false, "
                "the stock SanaPipeline's default: only lower-cased and stripped; null: on when those "
                "are installed",
            },
            max_sequence_length={
                "type": "integer",
                "minimum": 1,
                "default": MAX_SEQUENCE_LENGTH,
                "description": "Gemma positions the transformer sees, as the stock pipeline's "
                "max_sequence_length: with an instruction, <bos> and the last max_sequence_length - 1 "
                "(so the prompt itself gets max_sequence_length - 2 tokens); without, the prompt padded "
                "and cut to it",
            },
            complex_human_instruction={
                "type": ["array", "null"],
                "items": {"type": "string"},
                "default": STOCK_INSTRUCTION,
                "description": "lines joined with newlines and put before every prompt (not the negative "
                "one), as the stock pipeline does; default: the stock pipeline's own; [] or null: none",
            },
        ),
        "sample": options_schema(use_resolution_binning=RESOLUTION_BINNING_OPTION),
        "stage2": NO_OPTIONS,
    }

    def __init__(self, pipe: Any, options: LoadOptions, device: torch.device) -> None:
        super().__init__(pipe, options, device)
        if not isinstance(getattr(pipe.text_encoder, "norm", None), torch.nn.Module):
            raise CheckpointError(
                f"the sana family reads a Gemma2Model text encoder (with its final norm, text_encoder.norm); "
                f"this checkpoint's is a {type(pipe.text_encoder).__name__}"
            )
        self.clean_caption, self.notices = _caption_cleaning(self.family_options["clean_caption"])
        self.family_options["clean_caption"] = self.clean_caption
        self.instruction: list[str] = list(self.family_options["complex_human_instruction"] or [])
        self.family_options["complex_human_instruction"] = list(self.instruction)
        self.max_tokens = int(self.family_options["max_sequence_length"])

    @classmethod
    def load(cls, options: LoadOptions) -> Family:
        require_caption_cleaning(options.family_options.get("clean_caption"))
        return super().load(options)

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_hidden_layers)

    def text_encoders(self) -> list[TextEncoder]:
        encoder = self.pipe.text_encoder
        norm = module_path(encoder, encoder.norm)
        return [TextEncoder("text_encoder", encoder, self.num_layers, self.num_layers, norm)]

    def describe(self) -> dict[str, Any]:
        pipe = self.pipe
        native = int(pipe.transformer.config.sample_size) * pipe.vae_scale_factor
        instruction = (
            f"the complex human instruction ({len(self.instruction)} lines, joined with newlines) put "
            f"before the prompt, <bos> first, padded on the right and cut to the instruction's tokens + "
            f"{self.max_tokens - 2}; then <bos> and the last {self.max_tokens - 1} positions kept "
            "(the stock select_index), so the prompt itself gets "
            f"{self.max_tokens - 2} tokens"
            if self.instruction
            else f"no instruction: <bos> first, padded on the right and cut to {self.max_tokens} tokens"
        )
        return {
            **super().describe(),
            "defaults": stock_defaults(pipe, 20, 4.5, native),
            "lens": {
                "layers": "hidden_states[l] of Gemma-2, a causal decoder (each position sees itself and "
                "the positions before it: the instruction is read by every prompt token): 0 = the token "
                "embeddings times sqrt(hidden_size), i = the output of decoder layer i",
                "norm": NORM_RULE,
                "mask": "the tokenizer's attention mask, passed with every layer (prompt_attention_mask), "
                "through the same selection of positions",
                "uncond": "the negative prompt ('' by default) encoded as the stock pipeline does (no "
                "instruction, no selection, padded to max_sequence_length) at layer L, unless "
                "uncond=same-layer (then at layer l, normed as above)",
                "pooled": "none: Sana has no pooled text vector",
                "tokenization": "as SanaPipeline: the prompt "
                + ("cleaned (beautifulsoup4, ftfy)" if self.clean_caption else "lower-cased and stripped")
                + f", {instruction}",
            },
            "notices": self.notices,
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        sample_size = int(self.pipe.transformer.config.sample_size)
        binning = settings.family_options["use_resolution_binning"]
        if binning and sample_size not in BINNED_SAMPLE_SIZES:
            return (
                f"family_options.use_resolution_binning: this transformer's sample_size is {sample_size}, "
                f"for which the stock pipeline has no aspect-ratio table (it has {BINNED_SAMPLE_SIZES}); "
                "set it to false"
            )
        if not binning and (settings.height % SIZE_MULTIPLE or settings.width % SIZE_MULTIPLE):
            return (
                f"size: SanaPipeline needs a height and width divisible by {SIZE_MULTIPLE}, not "
                f"{settings.height}x{settings.width}; or leave family_options.use_resolution_binning on "
                "(the nearest trained size, resized to the asked one)"
            )
        if settings.scheduler not in (None, "default"):
            config = self.pipe.scheduler.config
            if config.get("prediction_type") != "flow_prediction" or not config.get("use_flow_sigmas"):
                return (
                    f"scheduler: {settings.scheduler!r} is built on the checkpoint's scheduler config, and "
                    f"this checkpoint's {type(self.pipe.scheduler).__name__} is not a flow-matching "
                    "DPM-Solver config (prediction_type flow_prediction, use_flow_sigmas); use default"
                )
        return super().problem_with(settings)

    def _text(self, prompt: str) -> str:
        return preprocess(self.pipe, prompt, self.clean_caption)

    def token_count(self, prompt: str) -> tuple[int, int]:
        """The positions of the ``max_sequence_length`` the transformer sees that the prompt needs, against
        that. Without an instruction: its tokens, ``<bos>`` included. With one: ``<bos>``, the position
        before the prompt and the prompt's tokens (the whole text's tokens less the instruction's, as the
        stock pipeline counts them), which are cut exactly when they need more."""
        tokenizer, text = self.pipe.tokenizer, self._text(prompt)
        if not self.instruction:
            return token_count(tokenizer, text), self.max_tokens
        chi = "\n".join(self.instruction)
        return token_count(tokenizer, chi + text) - len(tokenizer.encode(chi)) + 2, self.max_tokens

    def tokens(self, prompt: str) -> list[str | None]:
        """The selected positions: ``<bos>`` and the last ``max_sequence_length - 1`` of the instruction and
        the prompt (the instruction's tokens among them where the prompt is short)."""
        tokenizer = self.pipe.tokenizer
        tokens, select = gemma_tokens(tokenizer, self._text(prompt), self.max_tokens, self.instruction)
        texts = token_texts(tokenizer, tokens)
        return texts if select is None else [texts[index] for index in select]

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        return self._read(prompt, layers, readout, self.instruction)

    def unconditional(
        self, negative_prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        """As the stock pipeline encodes the negative prompt: no instruction, no selection."""
        return self._read(negative_prompt, layers, readout, [])

    def _read(
        self, prompt: str, layers: Sequence[int], readout: Readout, instruction: Sequence[str]
    ) -> dict[int, Embeds]:
        (encoder,) = self.text_encoders()
        indices = {layer: self.hidden_state_index(encoder, layer, readout) for layer in layers}
        states, mask = gemma_hidden_states(
            self.pipe.tokenizer,
            encoder.module,
            self._text(prompt),
            sorted(set(indices.values())),
            self.device,
            self.max_tokens,
            instruction,
        )
        return {
            layer: {"prompt_embeds": states[index], "prompt_attention_mask": mask}
            for layer, index in indices.items()
        }


def _caption_cleaning(asked: bool | None) -> tuple[bool, list[str]]:
    """Whether captions are cleaned (``asked``: true, false, or null = when possible), and the notice the
    user must see when null had to mean off (the stock Sana pipeline does not clean by default)."""
    missing = caption_cleaning_missing()
    if asked is None and missing:
        notice = (
            f"caption cleaning is off: {' and '.join(missing)} not installed, so prompts are only "
            "lower-cased and stripped, as the stock Sana pipeline does by default "
            f"(pip install {' '.join(missing)})"
        )
        return False, [notice]
    return bool(asked) and not missing, []


def gemma_tokens(
    tokenizer: Any, text: str, max_sequence_length: int, instruction: Sequence[str]
) -> tuple[Any, list[int] | None]:
    """``text`` (already preprocessed) after the ``instruction`` lines, tokenized as ``SanaPipeline`` does
    (right-padded; without an instruction to ``max_sequence_length``), and the positions the stock
    ``encode_prompt`` keeps of it (None: all)."""
    if not instruction:
        return tokenize(tokenizer, text, max_sequence_length, padding_side="right"), None
    chi = "\n".join(instruction)
    max_length = len(tokenizer.encode(chi)) + max_sequence_length - 2
    tokens = tokenize(tokenizer, chi + text, max_length, padding_side="right")
    return tokens, [0, *range(max_length - max_sequence_length + 1, max_length)]


@torch.no_grad()
def gemma_hidden_states(
    tokenizer: Any,
    encoder: torch.nn.Module,
    text: str,
    indices: Sequence[int],
    device: torch.device,
    max_sequence_length: int,
    instruction: Sequence[str],
) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
    """A decoder LLM (Gemma-2) read as ``SanaPipeline`` reads it, at hidden-state ``indices``: ``text``
    (already preprocessed) after the ``instruction`` lines, tokenized and selected as the stock
    ``_get_gemma_prompt_embeds`` and ``encode_prompt`` do (without an instruction: padded to
    ``max_sequence_length``, nothing selected, as the stock negative prompt); ``hidden_states[i]``
    through the final norm for ``i`` below the depth, the ``last_hidden_state`` (the stock embedding) at
    it; and the attention mask, selected alike (batch of 1)."""
    tokens, select = gemma_tokens(tokenizer, text, max_sequence_length, instruction)
    mask = tokens.attention_mask.to(device)
    output = encoder(tokens.input_ids.to(device), attention_mask=mask, output_hidden_states=True)
    last = int(encoder.config.num_hidden_layers)
    states = {
        index: output.last_hidden_state if index == last else encoder.norm(output.hidden_states[index])
        for index in indices
    }
    if select is not None:
        states = {index: state[:, select] for index, state in states.items()}
        mask = mask[:, select]
    return {index: state.to(dtype=encoder.dtype, device=device) for index, state in states.items()}, mask
