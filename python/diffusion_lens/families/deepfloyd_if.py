"""DeepFloyd IF: a T5 text encoder, a pixel-space stage I (64x64) and an optional stage II (to 256x256).

Sampling is the stock ``IFPipeline.__call__`` and ``IFSuperResolutionPipeline.__call__``, fed as
diffusers documents the two-stage use: stage I's raw output (``output_type="pt"``) is stage II's
``image``, one generator per item goes on through both stages, and both stages get the same
``prompt_embeds`` (the lens's chosen T5 hidden state) and ``negative_prompt_embeds``. So the final layer
gives the stock images for the same seed by construction. Captions are cleaned once, when the lens
encodes; the stock pipelines clean only prompts they encode themselves, never passed embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import IFPipeline, IFSuperResolutionPipeline

from ..devices import dtype_name
from ..images import to_uint8
from .base import (
    STOCK_READOUT,
    CheckpointError,
    Embeds,
    Family,
    Generators,
    LoadOptions,
    Readout,
    SamplerSettings,
    StepCallback,
    TextEncoder,
    stock_defaults,
)
from .captions import CLEAN_CAPTION_OPTION, preprocess, require_caption_cleaning, resolve_caption_cleaning
from .encoders import T5_NORM_RULE, sequence_tokens, t5_encoder, t5_hidden_states, token_count
from .loading import from_pretrained, pipeline_class, place, resolved_revision
from .options import NO_OPTIONS, OptionsSchema, options_schema
from .sampling import call_stock

# IF's T5 was trained on 77 tokens; the stock pipeline pads and truncates to that.
MAX_TOKENS = 77
STAGE2_CLASS = "IFSuperResolutionPipeline"
# The stock pipelines never run these on tensors; the lens never runs them at all.
WITHOUT_CHECKERS = {
    "safety_checker": None,
    "feature_extractor": None,
    "watermarker": None,
    "requires_safety_checker": False,
}


class DeepFloydIFFamily(Family):
    name = "if"
    pipeline_classes = ("IFPipeline",)
    stages = 2
    # The schedulers that handle IF's learned variance (its UNets predict 6 channels); the others fail.
    schedulers = ("default", "dpm-multistep", "dpm-singlestep", "ddpm")
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": options_schema(clean_caption=CLEAN_CAPTION_OPTION),
        "sample": NO_OPTIONS,
        "stage2": options_schema(
            noise_level={
                "type": "integer",
                "minimum": 0,
                "default": 250,
                "description": "noise added to the upscaled stage I image (IFSuperResolutionPipeline's "
                "noise_level; below the checkpoint's num_train_timesteps)",
            }
        ),
    }

    def __init__(
        self,
        pipe: IFPipeline,
        stage2: IFSuperResolutionPipeline | None,
        options: LoadOptions,
        device: torch.device,
    ) -> None:
        super().__init__(pipe, options, device)
        self.stage2 = stage2
        self.stage2_revision = None
        if stage2 is not None and options.stage2 is not None:
            self.stage2_revision = resolved_revision(stage2, options.stage2.revision)
        # HF T5 returns hidden states before the encoder's final RMS norm, except the last one.
        self.norm = pipe.text_encoder.encoder.final_layer_norm
        self.clean_caption, self.notices = resolve_caption_cleaning(
            self.family_options["clean_caption"], "IF"
        )
        self.family_options["clean_caption"] = self.clean_caption

    @classmethod
    def load(cls, options: LoadOptions) -> DeepFloydIFFamily:
        require_caption_cleaning(options.family_options.get("clean_caption"))
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
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_layers)

    @property
    def has_stage2(self) -> bool:
        return self.stage2 is not None

    def pipelines(self) -> tuple[Any, ...]:
        return (self.pipe,) if self.stage2 is None else (self.pipe, self.stage2)

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
                "defaults": stock_defaults(self.stage2, 50, 4.0, size2),
            }
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 100, 7.0, size),
            "lens": {
                "norm": T5_NORM_RULE,
                "uncond": "final layer of the negative prompt ('' by default), unless uncond=same-layer",
                "tokenization": f"as IFPipeline: padded and truncated to {MAX_TOKENS} tokens, </s> appended, "
                "attention mask; captions cleaned (beautifulsoup4, ftfy)"
                if self.clean_caption
                else "lower-cased and stripped, not cleaned",
                "stage2": "conditioned on the same layer's embeddings (and the same unconditional)",
                "safety_checker": "disabled",
                "watermark": "not applied",
            },
            "notices": self.notices,
            "stage2": stage2,
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        problem = super().problem_with(settings)
        if problem is None and settings.stage2 is not None and self.stage2 is not None:
            timesteps = int(self.stage2.image_noising_scheduler.config.num_train_timesteps)
            noise_level = settings.stage2.family_options["noise_level"]
            if not 0 <= noise_level < timesteps:
                return f"stage2.family_options.noise_level = {noise_level} is out of range 0..{timesteps - 1}"
        return problem

    def _text(self, prompt: str) -> str:
        """The prompt as IFPipeline tokenizes it: lower-cased and stripped, or cleaned."""
        return preprocess(self.pipe, prompt, self.clean_caption)

    def tokens(self, prompt: str) -> list[str | None]:
        return sequence_tokens(self.pipe.tokenizer, self._text(prompt), MAX_TOKENS)

    def token_count(self, prompt: str) -> tuple[int, int]:
        return token_count(self.pipe.tokenizer, self._text(prompt)), MAX_TOKENS

    def text_encoders(self) -> list[TextEncoder]:
        return [t5_encoder("text_encoder", self.pipe.text_encoder)]

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        text = self._text(prompt)
        states, _ = t5_hidden_states(pipe.tokenizer, pipe.text_encoder, text, layers, self.device, MAX_TOKENS)
        return {layer: {"prompt_embeds": state} for layer, state in states.items()}

    def sample(
        self,
        prompt_embeds: torch.Tensor,
        generators: Generators,
        settings: SamplerSettings,
        on_step: StepCallback,
        **embeds: torch.Tensor,
    ) -> dict[int, np.ndarray]:
        text = {"prompt_embeds": prompt_embeds, **embeds}
        total = settings.steps_per_item

        def stage_step(before: int, steps: int) -> StepCallback:
            """A stage's own (done, total timesteps) as steps of the whole item, both stages."""
            return lambda done, timesteps: on_step(before + done * steps // timesteps, total)

        low = call_stock(
            self.pipe,
            settings,
            generators[1],
            stage_step(0, settings.num_inference_steps),
            **text,
            output_type="pt",
        )
        images = {1: to_uint8(low)}
        stage2 = settings.stage2
        if stage2 is not None:
            assert self.stage2 is not None
            high = call_stock(
                self.stage2,
                stage2,
                generators[2],
                stage_step(settings.num_inference_steps, stage2.num_inference_steps),
                image=low,
                **text,
                output_type="pt",
            )
            images[2] = to_uint8(high)
        return images
