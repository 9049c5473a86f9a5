"""Flux.1: a CLIP text encoder for the pooled vector, T5 for the sequence, a guidance-distilled
transformer (no classifier-free guidance: ``guidance`` is the guidance the transformer embeds), a VAE.

The stock pipeline's ``prompt_embeds`` is T5's last hidden state (HF T5 returns it already normed),
encoded without an attention mask, padded to ``max_sequence_length``; its ``pooled_prompt_embeds`` is
CLIP's pooled output. Layer ``l`` (0..L, T5's depth) is T5's ``hidden_states[l]`` through the final RMS
norm for ``l < L``, as for IF and PixArt, so layer L gives the stock image for the same seed; the pooled
vector is the stock one unless ``lens.pooled`` says otherwise (CLIP gives no sequence here). There is
no unconditional branch: the lens sends no negative embeddings, and the orchestrator refuses a negative
prompt and ``uncond: same-layer`` for this family.

Sampling is the stock ``FluxPipeline.__call__`` (``Family.sample``) with its flow-matching scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from diffusers import FluxPipeline

from .base import STOCK_READOUT, Embeds, Family, Readout, TextEncoder, stock_defaults
from .encoders import (
    T5_NORM_RULE,
    clip_pooled,
    clip_read,
    pooled_rule,
    pooling_clip,
    sequence_tokens,
    t5_encoder,
    t5_hidden_states,
    token_count,
)
from .options import NO_OPTIONS, OptionsSchema, max_sequence_length_option, options_schema


class FluxFamily(Family):
    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    stock_class = FluxPipeline
    guidance = "distilled"
    accelerator_dtype = "bf16"  # the transformer overflows in fp16
    # Flow matching: the checkpoint's own scheduler; the named ones are for noise-prediction models.
    schedulers = ("default",)
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": options_schema(
            max_sequence_length=max_sequence_length_option(512, " (Flux.1-schnell is usually run with 256)")
        ),
        "sample": NO_OPTIONS,
        "stage2": NO_OPTIONS,
    }

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder_2.config.num_layers)

    @property
    def max_tokens(self) -> int:
        return int(self.family_options["max_sequence_length"])

    def text_encoders(self) -> list[TextEncoder]:
        return [
            pooling_clip("text_encoder", self.pipe.text_encoder),
            t5_encoder("text_encoder_2", self.pipe.text_encoder_2),
        ]

    def describe(self) -> dict[str, Any]:
        native = int(self.pipe.default_sample_size) * self.pipe.vae_scale_factor
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 28, 3.5, native),
            "lens": {
                "norm": T5_NORM_RULE,
                "uncond": "none: guidance-distilled (guidance is the transformer's embedded guidance)",
                "pooled": pooled_rule("CLIP's pooled output"),
                "tokenization": f"as FluxPipeline: T5 padded and cut to {self.max_tokens} tokens, "
                "no attention mask; CLIP to 77",
            },
        }

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        clip, _ = self.text_encoders()
        states, _ = t5_hidden_states(
            pipe.tokenizer_2, pipe.text_encoder_2, prompt, layers, self.device, self.max_tokens, masked=False
        )
        reading = clip_read(pipe.tokenizer, clip.module, prompt, self.device)
        pooled = clip_pooled(self, clip, pipe.tokenizer, reading, layers, readout)
        return {
            layer: {"prompt_embeds": state, "pooled_prompt_embeds": pooled[layer]}
            for layer, state in states.items()
        }

    def tokens(self, prompt: str) -> list[str | None]:
        return sequence_tokens(self.pipe.tokenizer_2, prompt, self.max_tokens)

    def token_count(self, prompt: str) -> tuple[int, int]:
        return token_count(self.pipe.tokenizer_2, prompt), self.max_tokens
