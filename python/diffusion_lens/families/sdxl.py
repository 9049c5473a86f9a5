"""Stable Diffusion XL: two CLIP text encoders (CLIP ViT-L, 12 layers, and OpenCLIP bigG, 32 layers, with
a projection), a UNet conditioned on both and on the pooled vector with size/crop time ids, a VAE.

What the stock pipeline does, and so what the lens does: each encoder's hidden state is used as it
comes out of its block, without the final norm, and the two are concatenated on the feature axis; the
pooled vector is the second encoder's projection of its final output. The stock pipeline takes the
penultimate hidden state of each (``hidden_states[-2]``).

Layer ``l`` (0..L, L the second encoder's depth): the second encoder's ``hidden_states[l]`` beside the
first encoder's ``hidden_states[l - (L - L1)]`` (the encoders aligned at their outputs; at least 0), no
norm. So layer L - 1 is the stock pipeline's conditioning and gives its image for the same seed (the
stock point of the sweep), and layer L is both final hidden states, before their norms. The pooled
vector is the stock one (the whole second encoder's, for the prompt) unless ``lens.pooled`` says
otherwise; ``lens.encoders`` may keep one encoder at its stock state. The unconditional branch is
the stock one too: zeros for no negative prompt (the checkpoints' ``force_zeros_for_empty_prompt``),
else the negative prompt at layer L - 1.

Sampling is the stock ``StableDiffusionXLPipeline.__call__`` (``Family.sample``): it adds the time ids
(original size, crop, target size) itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from diffusers import StableDiffusionXLPipeline

from .base import STOCK_READOUT, Embeds, Family, Readout, TextEncoder, stock_defaults
from .encoders import clip_pooled, clip_read, penultimate_clip, pooled_rule, sequence_tokens, token_count


class StableDiffusionXLFamily(Family):
    name = "sdxl"
    pipeline_classes = ("StableDiffusionXLPipeline",)
    stock_class = StableDiffusionXLPipeline

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder_2.config.num_hidden_layers)

    @property
    def stock_layer(self) -> int:
        return self.num_layers - 1

    def text_encoders(self) -> list[TextEncoder]:
        return [
            penultimate_clip("text_encoder", self.pipe.text_encoder, pooled=False),
            penultimate_clip("text_encoder_2", self.pipe.text_encoder_2, pooled=True),
        ]

    def describe(self) -> dict[str, Any]:
        native = int(self.pipe.unet.config.sample_size) * self.pipe.vae_scale_factor
        first = int(self.pipe.text_encoder.config.num_hidden_layers)
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 50, 5.0, native),
            "lens": {
                "norm": "none, as the stock pipeline: hidden states as they come out of their blocks",
                "layers": f"layer l = text_encoder_2 hidden_states[l] beside text_encoder "
                f"hidden_states[max(0, l - {self.num_layers - first})], concatenated; "
                f"layer {self.stock_layer} is the stock one",
                "pooled": pooled_rule("text_encoder_2's projection"),
                "uncond": f"the stock one: zeros for no negative prompt, else the negative prompt at layer "
                f"{self.stock_layer}, unless uncond=same-layer",
            },
        }

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        first, second = self.text_encoders()
        one = clip_read(pipe.tokenizer, first.module, prompt, self.device)
        two = clip_read(pipe.tokenizer_2, second.module, prompt, self.device)
        pooled = clip_pooled(self, second, pipe.tokenizer_2, two, layers, readout)
        index = self.hidden_state_index
        return {
            layer: {
                "prompt_embeds": torch.cat(
                    [
                        one.hidden_states[index(first, layer, readout)],
                        two.hidden_states[index(second, layer, readout)],
                    ],
                    dim=-1,
                ).to(dtype=second.module.dtype, device=self.device),
                "pooled_prompt_embeds": pooled[layer],
            }
            for layer in layers
        }

    def unconditional(
        self, negative_prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        if negative_prompt or not self.pipe.config.force_zeros_for_empty_prompt:
            return super().unconditional(negative_prompt, layers, readout)
        embeds = self.conditioning("", layers[:1])[layers[0]]
        zeros = {name: torch.zeros_like(tensor) for name, tensor in embeds.items()}
        return {layer: zeros for layer in layers}

    def tokens(self, prompt: str) -> list[str | None]:
        """Both CLIPs' tokens sit at the same positions (their vocabularies are the same); bigG's."""
        tokenizer = self.pipe.tokenizer_2
        return sequence_tokens(tokenizer, prompt, tokenizer.model_max_length)

    def token_count(self, prompt: str) -> tuple[int, int]:
        tokenizer = self.pipe.tokenizer_2
        return token_count(tokenizer, prompt), int(tokenizer.model_max_length)
