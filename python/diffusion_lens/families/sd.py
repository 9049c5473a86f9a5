"""Stable Diffusion 1.x / 2.x: one CLIP (or OpenCLIP) text encoder, a UNet, a VAE.

The sampling loop mirrors diffusers' ``StableDiffusionPipeline.__call__`` step for step, so that the
final layer through the lens gives the stock pipeline's image for the same seed. What differs: the
conditional embedding comes from a chosen hidden state, and items of a batch each have their own
generator (so an image never depends on its batch-mates).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from ..devices import dtype_name
from ..images import to_uint8
from ..schedulers import make_scheduler
from .base import Family, Generators, LoadOptions, SamplerSettings, StepCallback
from .loading import from_pretrained, place, resolved_revision
from .sampling import item_noise, step_kwargs


def final_layer_norm(text_encoder: torch.nn.Module) -> torch.nn.Module:
    """CLIP's final LayerNorm: on ``text_model`` before transformers 5.6 and for
    CLIPTextModelWithProjection; on the flattened CLIPTextModel itself from 5.6 on."""
    owner = getattr(text_encoder, "text_model", text_encoder)
    norm = getattr(owner, "final_layer_norm", None)
    if norm is None:
        raise TypeError(f"{type(text_encoder).__name__} has no final_layer_norm; not a CLIP text encoder?")
    return norm


class StableDiffusionFamily(Family):
    name = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)

    def __init__(self, pipe: StableDiffusionPipeline, options: LoadOptions, device: torch.device) -> None:
        self.pipe = pipe
        self.options = options
        self._device = device
        self.revision = resolved_revision(pipe, options.revision)
        self.norm = final_layer_norm(pipe.text_encoder)
        if options.offload == "encoder" and device.type != "cpu":
            self.offloaded_encoder = pipe.text_encoder

    @classmethod
    def load(cls, options: LoadOptions) -> StableDiffusionFamily:
        pipe = from_pretrained(
            StableDiffusionPipeline,
            options.model,
            options.revision,
            options,
            safety_checker=None,
            requires_safety_checker=False,
        )
        return cls(pipe, options, place(pipe, options))

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_hidden_layers)

    def describe(self) -> dict[str, Any]:
        unet, scale = self.pipe.unet, self.pipe.vae_scale_factor
        native = int(unet.config.sample_size) * scale
        return {
            "pipeline_class": type(self.pipe).__name__,
            "revision": self.revision,
            "device": str(self.device),
            "dtype": dtype_name(self.pipe.text_encoder.dtype),
            "defaults": {
                "steps": 50,
                "guidance": 7.5,
                "height": native,
                "width": native,
                "scheduler": type(self.pipe.scheduler).__name__,
            },
            "lens": {
                "norm": "text encoder final_layer_norm applied to hidden_states[l] for every l, L included",
                "uncond": "final layer of the negative prompt ('' by default), unless uncond=same-layer",
                "safety_checker": "disabled",
            },
        }

    @torch.no_grad()
    def encode(self, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        pipe = self.pipe
        tokens = pipe.tokenizer(
            [prompt],
            padding="max_length",
            max_length=pipe.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        attention_mask = None
        if getattr(pipe.text_encoder.config, "use_attention_mask", False):
            attention_mask = tokens.attention_mask.to(self.device)
        output = pipe.text_encoder(
            tokens.input_ids.to(self.device),
            attention_mask=attention_mask,
            output_hidden_states=True,
        )
        dtype = pipe.text_encoder.dtype
        return {
            layer: self.norm(output.hidden_states[layer]).to(dtype=dtype, device=self.device)
            for layer in layers
        }

    def token_count(self, prompt: str) -> tuple[int, int]:
        tokenizer = self.pipe.tokenizer
        # Untruncated (verbose=False: no "longer than the maximum" log line; the done reply says it).
        tokens = tokenizer(prompt, truncation=False, verbose=False).input_ids
        return len(tokens), int(tokenizer.model_max_length)

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        generators: Generators,
        settings: SamplerSettings,
        on_step: StepCallback,
    ) -> dict[int, np.ndarray]:
        pipe, device = self.pipe, self.device
        stage1 = generators[1]
        scheduler = make_scheduler(settings.scheduler, pipe.scheduler)
        scheduler.set_timesteps(settings.steps, device=device)
        timesteps = scheduler.timesteps

        guided = settings.guidance > 1 and pipe.unet.config.time_cond_proj_dim is None
        embeddings = torch.cat([uncond, cond]) if guided else cond

        shape = (
            pipe.unet.config.in_channels,
            settings.height // pipe.vae_scale_factor,
            settings.width // pipe.vae_scale_factor,
        )
        latents = item_noise(shape, stage1, device, cond.dtype) * scheduler.init_noise_sigma
        extra = step_kwargs(scheduler, stage1)

        for index, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise = pipe.unet(model_input, t, encoder_hidden_states=embeddings, return_dict=False)[0]
            if guided:
                noise_uncond, noise_cond = noise.chunk(2)
                noise = noise_uncond + settings.guidance * (noise_cond - noise_uncond)
            latents = scheduler.step(noise, t, latents, **extra, return_dict=False)[0]
            on_step(index + 1, len(timesteps))

        images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
        return {1: to_uint8(images)}
