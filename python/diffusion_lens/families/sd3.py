"""Stable Diffusion 3 / 3.5: two CLIP encoders with projections (CLIP-L, OpenCLIP bigG) and T5 (optional),
an MMDiT transformer, a VAE.

What the stock pipeline does, and so what the lens does: each CLIP's penultimate hidden state, as it
comes (no final norm), concatenated on the feature axis and zero-padded to T5's width, then followed on
the sequence axis by T5's last hidden state (encoded without a mask; zeros when the checkpoint has no
T5); the pooled vector is both CLIPs' projections, concatenated.

Layer ``l`` runs over T5's depth L (or, without T5, the second CLIP's, whose stock layer is L - 1): every
encoder steps back from its own stock layer by ``stock - l`` (at least to 0). So T5 gives
``hidden_states[l]`` (through its final RMS norm for l < L, as for IF), each CLIP ``hidden_states[its
penultimate - (stock - l)]``, raw; the stock layer is the stock conditioning and gives the stock image
for the same seed. The pooled vector is the stock one unless ``lens.pooled`` says otherwise; the
unconditional branch is the negative prompt (stock: ``""``) at the stock layer.

Sampling is the stock ``StableDiffusion3Pipeline.__call__`` (``Family.sample``) with its flow-matching
scheduler.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusion3Pipeline

from .base import STOCK_READOUT, Embeds, Family, Readout, TextEncoder, stock_defaults
from .encoders import (
    T5_NORM_RULE,
    clip_pooled,
    clip_read,
    penultimate_clip,
    pooled_rule,
    sequence_tokens,
    t5_encoder,
    t5_hidden_states,
    token_count,
)
from .options import NO_OPTIONS, OptionsSchema, max_sequence_length_option, options_schema


class StableDiffusion3Family(Family):
    name = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    stock_class = StableDiffusion3Pipeline
    accelerator_dtype = "bf16"
    schedulers = ("default",)  # flow matching: the checkpoint's own
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": options_schema(max_sequence_length=max_sequence_length_option(256)),
        "sample": NO_OPTIONS,
        "stage2": NO_OPTIONS,
    }

    @property
    def num_layers(self) -> int:
        if self.pipe.text_encoder_3 is not None:
            return int(self.pipe.text_encoder_3.config.num_layers)
        return int(self.pipe.text_encoder_2.config.num_hidden_layers)

    @property
    def max_tokens(self) -> int:
        return int(self.family_options["max_sequence_length"])

    @property
    def stock_layer(self) -> int:
        return self.num_layers if self.pipe.text_encoder_3 is not None else self.num_layers - 1

    def text_encoders(self) -> list[TextEncoder]:
        pipe = self.pipe
        encoders = [
            penultimate_clip("text_encoder", pipe.text_encoder, pooled=True),
            penultimate_clip("text_encoder_2", pipe.text_encoder_2, pooled=True),
        ]
        if pipe.text_encoder_3 is not None:
            encoders.append(t5_encoder("text_encoder_3", pipe.text_encoder_3))
        return encoders

    def describe(self) -> dict[str, Any]:
        native = int(self.pipe.default_sample_size) * self.pipe.vae_scale_factor
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 28, 7.0, native),
            "lens": {
                "norm": f"T5: {T5_NORM_RULE}; CLIPs: none, as the stock pipeline",
                "layers": f"every encoder steps back from its stock layer by {self.stock_layer} - l: T5 "
                "hidden_states[l], each CLIP hidden_states[penultimate - (stock - l)]; "
                f"layer {self.stock_layer} is the stock one",
                "pooled": pooled_rule("both CLIPs' projections"),
                "uncond": "the negative prompt ('' by default) at the stock layer, unless uncond=same-layer",
                "t5": "present"
                if self.pipe.text_encoder_3 is not None
                else "absent: zeros, as the stock pipeline",
            },
        }

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        first, second, *t5 = self.text_encoders()
        one = clip_read(pipe.tokenizer, first.module, prompt, self.device)
        two = clip_read(pipe.tokenizer_2, second.module, prompt, self.device)
        pooled_one = clip_pooled(self, first, pipe.tokenizer, one, layers, readout)
        pooled_two = clip_pooled(self, second, pipe.tokenizer_2, two, layers, readout)
        width = int(pipe.transformer.config.joint_attention_dim)
        index = self.hidden_state_index
        if t5:
            t5_indices = {layer: index(t5[0], layer, readout) for layer in layers}
            t5_states, _ = t5_hidden_states(
                pipe.tokenizer_3,
                t5[0].module,
                prompt,
                sorted(set(t5_indices.values())),
                self.device,
                self.max_tokens,
                masked=False,
            )
        conditioning: dict[int, Embeds] = {}
        for layer in layers:
            clip = torch.cat(
                [
                    one.hidden_states[index(first, layer, readout)],
                    two.hidden_states[index(second, layer, readout)],
                ],
                dim=-1,
            ).to(dtype=first.module.dtype)
            clip = torch.nn.functional.pad(clip, (0, width - clip.shape[-1]))
            if t5:
                sequence = t5_states[t5_indices[layer]]
            else:
                sequence = torch.zeros((1, self.max_tokens, width), dtype=clip.dtype, device=self.device)
            conditioning[layer] = {
                "prompt_embeds": torch.cat([clip, sequence], dim=-2),
                "pooled_prompt_embeds": torch.cat([pooled_one[layer], pooled_two[layer]], dim=-1),
            }
        return conditioning

    def tokens(self, prompt: str) -> list[str | None]:
        """The CLIPs' positions (both tokenize alike), then T5's (padding all through without T5)."""
        pipe = self.pipe
        clip = sequence_tokens(pipe.tokenizer, prompt, pipe.tokenizer.model_max_length)
        if pipe.text_encoder_3 is None:
            return clip + [None] * self.max_tokens
        return clip + sequence_tokens(pipe.tokenizer_3, prompt, self.max_tokens)

    def token_count(self, prompt: str) -> tuple[int, int]:
        if self.pipe.text_encoder_3 is not None:
            return token_count(self.pipe.tokenizer_3, prompt), self.max_tokens
        tokenizer = self.pipe.tokenizer_2
        return token_count(tokenizer, prompt), int(tokenizer.model_max_length)
