"""DeepFloyd IF: a T5 text encoder, a pixel-space stage I (64x64) and an optional stage II (to 256x256).

The sampling loops mirror diffusers' ``IFPipeline.__call__`` and ``IFSuperResolutionPipeline.__call__``
step for step, fed the way diffusers documents the two-stage use: stage I's raw output (``output_type
="pt"``) becomes stage II's input, one generator per item goes on through both stages, and stage II
gets stage I's prompt embeddings. So the final layer through the lens gives the stock images for the
same seed. What differs: the conditional embedding comes from a chosen T5 hidden state (stage II gets
the same layer's), and each item of a batch has its own generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import IFPipeline, IFSuperResolutionPipeline
from diffusers.utils import is_bs4_available, is_ftfy_available

from ..devices import dtype_name
from ..images import to_uint8
from ..schedulers import make_scheduler
from .base import (
    CheckpointError,
    Family,
    Generators,
    LoadOptions,
    SamplerSettings,
    Stage2Settings,
    StepCallback,
)
from .loading import from_pretrained, pipeline_class, place, resolved_revision
from .sampling import item_noise, step_kwargs

# IF's T5 was trained on 77 tokens; the stock pipeline pads and truncates to that.
MAX_TOKENS = 77
STAGE2_CLASS = "IFSuperResolutionPipeline"
# The stock pipelines' own defaults (IFPipeline.__call__, IFSuperResolutionPipeline.__call__).
STAGE1_DEFAULTS = {"steps": 100, "guidance": 7.0}
STAGE2_DEFAULTS = {"steps": 50, "guidance": 4.0, "noise_level": 250}
# The stock pipelines never run these on tensors; the lens never runs them at all.
WITHOUT_CHECKERS = {
    "safety_checker": None,
    "feature_extractor": None,
    "watermarker": None,
    "requires_safety_checker": False,
}


def caption_cleaning_missing() -> list[str]:
    """The packages IF's caption cleaning needs that are not installed."""
    return [
        name for name, ok in (("beautifulsoup4", is_bs4_available()), ("ftfy", is_ftfy_available())) if not ok
    ]


def _fresh_scheduler(
    name: str | None, checkpoint_scheduler: Any, steps: int, device: torch.device
) -> tuple[Any, bool]:
    """A scheduler for one run, set up as both stock IF pipelines do; and whether the UNet's variance
    output goes to it (IF's own DDPM and DPM-Solver use learned-range variance; others get noise only)."""
    scheduler = make_scheduler(name, checkpoint_scheduler)
    scheduler.set_timesteps(steps, device=device)
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(0)
    return scheduler, scheduler.config.get("variance_type") in ("learned", "learned_range")


def _guide(noise: torch.Tensor, channels: int, guidance: float) -> torch.Tensor:
    """IF's classifier-free guidance: on the noise half of the output; the text branch's variance."""
    noise_uncond, noise_text = noise.chunk(2)
    noise_uncond, _ = noise_uncond.split(channels, dim=1)
    noise_text, variance = noise_text.split(channels, dim=1)
    return torch.cat([noise_uncond + guidance * (noise_text - noise_uncond), variance], dim=1)


class DeepFloydIFFamily(Family):
    name = "if"
    pipeline_classes = ("IFPipeline",)
    supports_stage2 = True
    cleans_captions = True

    def __init__(
        self,
        pipe: IFPipeline,
        stage2: IFSuperResolutionPipeline | None,
        options: LoadOptions,
        device: torch.device,
    ) -> None:
        self.pipe = pipe
        self.stage2 = stage2
        self.options = options
        self._device = device
        self.revision = resolved_revision(pipe, options.revision)
        self.stage2_revision = None
        if stage2 is not None and options.stage2 is not None:
            self.stage2_revision = resolved_revision(stage2, options.stage2.revision)
        # HF T5 returns hidden states before the encoder's final RMS norm, except the last one.
        self.norm = pipe.text_encoder.encoder.final_layer_norm
        missing = caption_cleaning_missing()
        self.clean_caption = options.clean_caption is not False and not missing
        self.notices: list[str] = []
        if options.clean_caption is None and missing:
            self.notices.append(
                f"caption cleaning is off: {' and '.join(missing)} not installed, so prompts are only "
                "lower-cased and stripped; the stock IF pipeline cleans captions by default "
                f"(pip install {' '.join(missing)})"
            )
        if options.offload == "encoder" and device.type != "cpu":
            self.offloaded_encoder = pipe.text_encoder

    @classmethod
    def load(cls, options: LoadOptions) -> DeepFloydIFFamily:
        missing = caption_cleaning_missing()
        if options.clean_caption and missing:
            raise CheckpointError(
                f"clean_caption is on but {' and '.join(missing)} not installed "
                f"(pip install {' '.join(missing)})"
            )
        pipe = from_pretrained(IFPipeline, options.model, options.revision, options, **WITHOUT_CHECKERS)
        stage2 = None
        if options.stage2 is not None:
            source = options.stage2
            found = pipeline_class(source.model, source.revision)
            if found != STAGE2_CLASS:
                raise CheckpointError(
                    f"stage II model {source.model}: pipeline class {found or '(none)'!r} "
                    f"is not {STAGE2_CLASS}"
                )
            # Stage II's own T5 copy is never used: it is conditioned on stage I's embeddings.
            stage2 = from_pretrained(
                IFSuperResolutionPipeline,
                source.model,
                source.revision,
                options,
                text_encoder=None,
                tokenizer=None,
                **WITHOUT_CHECKERS,
            )
            place(stage2, options)
        return cls(pipe, stage2, options, place(pipe, options))

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_layers)

    @property
    def has_stage2(self) -> bool:
        return self.stage2 is not None

    def describe(self) -> dict[str, Any]:
        size = int(self.pipe.unet.config.sample_size)
        stage2 = None
        if self.stage2 is not None and self.options.stage2 is not None:
            size2 = int(self.stage2.unet.config.sample_size)
            stage2 = {
                "model": self.options.stage2.model,
                "pipeline_class": type(self.stage2).__name__,
                "revision": self.stage2_revision,
                "dtype": dtype_name(self.stage2.unet.dtype),
                "defaults": {
                    **STAGE2_DEFAULTS,
                    "height": size2,
                    "width": size2,
                    "scheduler": type(self.stage2.scheduler).__name__,
                },
            }
        return {
            "pipeline_class": type(self.pipe).__name__,
            "revision": self.revision,
            "device": str(self.device),
            "dtype": dtype_name(self.pipe.text_encoder.dtype),
            "defaults": {
                **STAGE1_DEFAULTS,
                "height": size,
                "width": size,
                "scheduler": type(self.pipe.scheduler).__name__,
            },
            "lens": {
                "norm": "T5 encoder final_layer_norm applied to hidden_states[l] for l < L; "
                "hidden_states[L] is already normed",
                "uncond": "final layer of the negative prompt ('' by default), unless uncond=same-layer",
                "tokenization": f"as IFPipeline: padded and truncated to {MAX_TOKENS} tokens, </s> appended, "
                "attention mask; captions cleaned (beautifulsoup4, ftfy)"
                if self.clean_caption
                else "lower-cased and stripped, not cleaned",
                "stage2": "conditioned on the same layer's embeddings (and the same unconditional)",
                "safety_checker": "disabled",
                "watermark": "not applied",
            },
            "clean_caption": self.clean_caption,
            "notices": self.notices,
            "stage2": stage2,
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        problem = super().problem_with(settings)
        if problem is None and settings.stage2 is not None and self.stage2 is not None:
            timesteps = int(self.stage2.image_noising_scheduler.config.num_train_timesteps)
            if not 0 <= settings.stage2.noise_level < timesteps:
                return (
                    f"stage2.noise_level = {settings.stage2.noise_level} is out of range 0..{timesteps - 1}"
                )
        return problem

    def _text(self, prompt: str) -> list[str]:
        """The prompt as IFPipeline tokenizes it: lower-cased and stripped, or cleaned."""
        return self.pipe._text_preprocessing(prompt, clean_caption=self.clean_caption)

    def token_count(self, prompt: str) -> tuple[int, int]:
        # Untruncated, with </s> (verbose=False: no "longer than the maximum" log line).
        tokens = self.pipe.tokenizer(self._text(prompt), add_special_tokens=True, verbose=False).input_ids
        return len(tokens[0]), MAX_TOKENS

    @torch.no_grad()
    def encode(self, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        pipe = self.pipe
        encoder = pipe.text_encoder
        text = self._text(prompt)
        tokens = pipe.tokenizer(
            text,
            padding="max_length",
            max_length=MAX_TOKENS,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        output = encoder(
            tokens.input_ids.to(self.device),
            attention_mask=tokens.attention_mask.to(self.device),
            output_hidden_states=True,
        )
        hidden = output.hidden_states
        last = len(hidden) - 1
        return {
            layer: (hidden[layer] if layer == last else self.norm(hidden[layer])).to(
                dtype=encoder.dtype, device=self.device
            )
            for layer in layers
        }

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        generators: Generators,
        settings: SamplerSettings,
        on_step: StepCallback,
    ) -> dict[int, np.ndarray]:
        total = settings.steps_per_item

        def stage1_step(done: int) -> None:
            on_step(done, total)

        raw = self._stage1(cond, uncond, generators[1], settings, stage1_step)
        images = {1: to_uint8(raw)}
        if settings.stage2 is not None:

            def stage2_step(done: int) -> None:
                on_step(settings.steps + done, total)

            images[2] = to_uint8(self._stage2(raw, cond, uncond, generators[2], settings.stage2, stage2_step))
        return images

    def _stage1(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        generators: list[torch.Generator],
        settings: SamplerSettings,
        on_step: Callable[[int], None],
    ) -> torch.Tensor:
        """IFPipeline's loop; returns its ``output_type="pt"`` images (B, 3, H, W), in about [-1, 1]."""
        pipe, device = self.pipe, self.device
        scheduler, learned_variance = _fresh_scheduler(
            settings.scheduler, pipe.scheduler, settings.steps, device
        )
        guided = settings.guidance > 1.0
        embeddings = torch.cat([uncond, cond]) if guided else cond
        channels = pipe.unet.config.in_channels
        images = item_noise((channels, settings.height, settings.width), generators, device, embeddings.dtype)
        images = images * scheduler.init_noise_sigma
        extra = step_kwargs(scheduler, generators)
        for index, t in enumerate(scheduler.timesteps):
            model_input = torch.cat([images] * 2) if guided else images
            model_input = scheduler.scale_model_input(model_input, t)
            noise = pipe.unet(model_input, t, encoder_hidden_states=embeddings, return_dict=False)[0]
            if guided:
                noise = _guide(noise, model_input.shape[1], settings.guidance)
            if not learned_variance:
                noise, _ = noise.split(model_input.shape[1], dim=1)
            images = scheduler.step(noise, t, images, **extra, return_dict=False)[0]
            on_step(index + 1)
        pipe.maybe_free_model_hooks()  # with model CPU offload: stage I's UNet leaves the GPU
        return images

    def _stage2(
        self,
        low_res: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        generators: list[torch.Generator],
        settings: Stage2Settings,
        on_step: Callable[[int], None],
    ) -> torch.Tensor:
        """IFSuperResolutionPipeline's loop on stage I's raw images and embeddings."""
        pipe = self.stage2
        assert pipe is not None
        device, dtype = self.device, pipe.unet.dtype
        scheduler, learned_variance = _fresh_scheduler(
            settings.scheduler, pipe.scheduler, settings.steps, device
        )
        guided = settings.guidance > 1.0
        # Without a text encoder of its own the stock stage II casts embeddings to its UNet's dtype.
        embeddings = (torch.cat([uncond, cond]) if guided else cond).to(device=device, dtype=dtype)
        channels = pipe.unet.config.in_channels // 2
        images = item_noise((channels, settings.height, settings.width), generators, device, embeddings.dtype)
        images = images * scheduler.init_noise_sigma
        extra = step_kwargs(scheduler, generators)

        upscaled = F.interpolate(
            low_res.to(device=device, dtype=dtype),
            (settings.height, settings.width),
            mode="bilinear",
            align_corners=True,
        )
        noise_level = torch.tensor([settings.noise_level] * upscaled.shape[0], device=device)
        augmentation = item_noise(tuple(upscaled.shape[1:]), generators, device, upscaled.dtype)
        upscaled = pipe.image_noising_scheduler.add_noise(upscaled, augmentation, timesteps=noise_level)
        if guided:
            noise_level = torch.cat([noise_level] * 2)

        for index, t in enumerate(scheduler.timesteps):
            model_input = torch.cat([images, upscaled], dim=1)
            model_input = torch.cat([model_input] * 2) if guided else model_input
            model_input = scheduler.scale_model_input(model_input, t)
            noise = pipe.unet(
                model_input, t, encoder_hidden_states=embeddings, class_labels=noise_level, return_dict=False
            )[0]
            if guided:
                noise = _guide(noise, model_input.shape[1] // 2, settings.guidance)
            if not learned_variance:
                noise, _ = noise.split(images.shape[1], dim=1)
            images = scheduler.step(noise, t, images, **extra, return_dict=False)[0]
            on_step(index + 1)
        pipe.maybe_free_model_hooks()
        return images
