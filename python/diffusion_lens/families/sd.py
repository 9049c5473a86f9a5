"""Stable Diffusion 1.x / 2.x: one CLIP (or OpenCLIP) text encoder, a UNet, a VAE.

Sampling is the stock ``StableDiffusionPipeline.__call__`` (``Family.sample``) fed the lens's
``prompt_embeds`` (a chosen hidden state of the CLIP encoder) and one generator per item, so the final
layer gives the stock pipeline's image for the same seed by construction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from diffusers import StableDiffusionPipeline

from .base import STOCK_READOUT, Embeds, Family, LoadOptions, Readout, TextEncoder, stock_defaults
from .encoders import clip_hidden_states, final_layer_norm, module_path, sequence_tokens, token_count

__all__ = ["StableDiffusionFamily", "final_layer_norm"]


class StableDiffusionFamily(Family):
    name = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)
    stock_class = StableDiffusionPipeline
    stock_components: ClassVar[dict[str, Any]] = {"safety_checker": None, "requires_safety_checker": False}

    def __init__(self, pipe: StableDiffusionPipeline, options: LoadOptions, device: torch.device) -> None:
        super().__init__(pipe, options, device)
        self.norm = final_layer_norm(pipe.text_encoder)  # not a CLIP encoder: refused here

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_hidden_layers)

    def text_encoders(self) -> list[TextEncoder]:
        encoder = self.pipe.text_encoder
        norm = module_path(encoder, self.norm)
        return [TextEncoder("text_encoder", encoder, self.num_layers, self.num_layers, norm)]

    def describe(self) -> dict[str, Any]:
        unet, scale = self.pipe.unet, self.pipe.vae_scale_factor
        native = int(unet.config.sample_size) * scale
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 50, 7.5, native),
            "lens": {
                "norm": "text encoder final_layer_norm applied to hidden_states[l] for every l, L included",
                "uncond": "final layer of the negative prompt ('' by default), unless uncond=same-layer",
                "safety_checker": "disabled",
            },
        }

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        states = clip_hidden_states(pipe.tokenizer, pipe.text_encoder, prompt, layers, self.device)
        return {layer: {"prompt_embeds": state} for layer, state in states.items()}

    def tokens(self, prompt: str) -> list[str | None]:
        tokenizer = self.pipe.tokenizer
        return sequence_tokens(tokenizer, prompt, tokenizer.model_max_length)

    def token_count(self, prompt: str) -> tuple[int, int]:
        tokenizer = self.pipe.tokenizer
        return token_count(tokenizer, prompt), int(tokenizer.model_max_length)
