"""PixArt-alpha and PixArt-Sigma: one T5 text encoder read with its attention mask, a DiT transformer,
a VAE.

Sampling is the stock ``PixArtAlphaPipeline.__call__`` / ``PixArtSigmaPipeline.__call__`` fed the lens's
``prompt_embeds`` and ``prompt_attention_mask`` (and their ``negative_`` twins), one generator per item,
with the stock resolution binning unless it is turned off. The stock pipeline's ``prompt_embeds`` is
T5's last hidden state, which HF T5 returns already normed: so hidden state L gives the stock image for
the same seed by construction, and every earlier index goes through the final RMS norm, as for IF.
Captions are cleaned as the stock pipeline does, once, when the lens encodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

from .base import (
    STOCK_READOUT,
    Embeds,
    Family,
    LoadOptions,
    Readout,
    SamplerSettings,
    TextEncoder,
    stock_defaults,
)
from .captions import CLEAN_CAPTION_OPTION, preprocess, require_caption_cleaning, resolve_caption_cleaning
from .encoders import T5_NORM_RULE, sequence_tokens, t5_encoder, t5_hidden_states, token_count
from .loading import from_pretrained, pipeline_class, place
from .options import NO_OPTIONS, RESOLUTION_BINNING_OPTION, OptionsSchema, options_schema

# The stock pipelines' own T5 token counts (__call__'s max_sequence_length).
MAX_SEQUENCE_LENGTH = {"PixArtAlphaPipeline": 120, "PixArtSigmaPipeline": 300}
# Transformer sample sizes the stock resolution binning has aspect-ratio tables for (1024, 512, 256 px).
BINNED_SAMPLE_SIZES = (128, 64, 32)


class PixArtFamily(Family):
    name = "pixart"
    pipeline_classes = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
    options: ClassVar[dict[str, OptionsSchema]] = {
        "load": options_schema(
            clean_caption=CLEAN_CAPTION_OPTION,
            max_sequence_length={
                "type": ["integer", "null"],
                "minimum": 1,
                "default": None,
                "description": "T5 tokens a prompt is padded and cut to; null: the pipeline's own "
                "(alpha 120, Sigma 300)",
            },
        ),
        "sample": options_schema(use_resolution_binning=RESOLUTION_BINNING_OPTION),
        "stage2": NO_OPTIONS,
    }

    def __init__(self, pipe: Any, options: LoadOptions, device: torch.device) -> None:
        super().__init__(pipe, options, device)
        self.clean_caption, self.notices = resolve_caption_cleaning(
            self.family_options["clean_caption"], "PixArt"
        )
        self.family_options["clean_caption"] = self.clean_caption
        if self.family_options["max_sequence_length"] is None:
            self.family_options["max_sequence_length"] = MAX_SEQUENCE_LENGTH[type(pipe).__name__]
        self.max_tokens = int(self.family_options["max_sequence_length"])

    @classmethod
    def load(cls, options: LoadOptions) -> PixArtFamily:
        require_caption_cleaning(options.family_options.get("clean_caption"))
        found = pipeline_class(options.config_model, options.revision)
        pipeline = PixArtSigmaPipeline if found == "PixArtSigmaPipeline" else PixArtAlphaPipeline
        pipe = from_pretrained(pipeline, options.model, options.revision, options)
        return cls(pipe, options, place(pipe, options))

    @property
    def num_layers(self) -> int:
        return int(self.pipe.text_encoder.config.num_layers)

    def describe(self) -> dict[str, Any]:
        native = int(self.pipe.transformer.config.sample_size) * self.pipe.vae_scale_factor
        return {
            **super().describe(),
            "defaults": stock_defaults(self.pipe, 20, 4.5, native),
            "lens": {
                "norm": T5_NORM_RULE,
                "uncond": "final layer of the negative prompt ('' by default), unless uncond=same-layer",
                "mask": "T5's attention mask is passed with every layer (prompt_attention_mask)",
                "tokenization": f"as {type(self.pipe).__name__}: padded and truncated to {self.max_tokens} "
                "tokens, </s> appended; "
                + (
                    "captions cleaned (beautifulsoup4, ftfy)"
                    if self.clean_caption
                    else "lower-cased and stripped"
                ),
            },
            "notices": self.notices,
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        own = settings.scheduler in (None, "default")
        if settings.num_inference_steps == 1 and not (
            own and type(self.pipe.scheduler).__name__ == "LCMScheduler"
        ):
            # The stock pipeline reads a one-step run as a distilled (DMD) one, whose LCM scheduler returns
            # the denoised sample second: any other scheduler fails there.
            return "steps = 1 needs the LCM scheduler of a one-step (DMD) PixArt checkpoint; use 2 or more"
        sample_size = int(self.pipe.transformer.config.sample_size)
        if settings.family_options["use_resolution_binning"] and sample_size not in BINNED_SAMPLE_SIZES:
            return (
                f"family_options.use_resolution_binning: this transformer's sample_size is {sample_size}, "
                f"for which the stock pipeline has no aspect-ratio table (it has {BINNED_SAMPLE_SIZES}); "
                "set it to false"
            )
        return super().problem_with(settings)

    def _text(self, prompt: str) -> str:
        return preprocess(self.pipe, prompt, self.clean_caption)

    def tokens(self, prompt: str) -> list[str | None]:
        return sequence_tokens(self.pipe.tokenizer, self._text(prompt), self.max_tokens)

    def token_count(self, prompt: str) -> tuple[int, int]:
        return token_count(self.pipe.tokenizer, self._text(prompt)), self.max_tokens

    def text_encoders(self) -> list[TextEncoder]:
        return [t5_encoder("text_encoder", self.pipe.text_encoder)]

    def conditioning(
        self, prompt: str, layers: Sequence[int], readout: Readout = STOCK_READOUT
    ) -> dict[int, Embeds]:
        pipe = self.pipe
        text = self._text(prompt)
        states, mask = t5_hidden_states(
            pipe.tokenizer, pipe.text_encoder, text, layers, self.device, self.max_tokens
        )
        return {
            layer: {"prompt_embeds": state, "prompt_attention_mask": mask} for layer, state in states.items()
        }
