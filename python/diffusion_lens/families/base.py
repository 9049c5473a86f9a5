"""What every pipeline family provides to the lens (lens.py drives it; server.py never sees torch)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from ..devices import dtype_name
from ..images import unit_to_uint8
from .sampling import call_stock

OFFLOAD_MODES = ("none", "encoder", "model")


class CheckpointError(ValueError):
    """A checkpoint or load option that cannot be used; the message is written for the user."""


@dataclass(frozen=True)
class Stage2Settings:
    """A second (super-resolution) stage conditioned on the same embeddings as the first."""

    steps: int
    guidance: float
    height: int
    width: int
    noise_level: int  # how much noise is added to the upscaled stage-I image
    scheduler: str | None
    seed: int | None  # None: go on with each item's stage-I generator (one generator per item)


@dataclass(frozen=True)
class SamplerSettings:
    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str | None  # None or "default": the checkpoint's own
    stage2: Stage2Settings | None = None

    @property
    def steps_per_item(self) -> int:
        """Denoising steps one item takes, over all stages (the unit of progress)."""
        return self.steps + (self.stage2.steps if self.stage2 else 0)


@dataclass(frozen=True)
class CheckpointSource:
    model: str
    revision: str | None


@dataclass(frozen=True)
class LoadOptions:
    model: str
    revision: str | None
    device: str  # resolved: cpu, cuda or mps
    dtype: torch.dtype
    offload: str  # one of OFFLOAD_MODES
    allow_pickle: bool
    clean_caption: bool | None = None  # None: on where the family cleans captions and can
    stage2: CheckpointSource | None = None
    variant: str | None = None  # weight files to load, e.g. "fp16" (*.fp16.safetensors); for every stage


# Called after each denoising step with (steps done, total steps of this run, over all stages).
StepCallback = Callable[[int, int], None]
# Stage number → one generator per item of the batch.
Generators = Mapping[int, list[torch.Generator]]
# A pipeline ``__call__``'s text arguments by name: {"prompt_embeds": tensor, ...}.
Embeds = dict[str, torch.Tensor]


class Family(ABC):
    """One pipeline family: how to load its stock pipeline and what its encoder's hidden states give as
    that pipeline's arguments; sampling is the stock pipeline's own ``__call__``."""

    name: ClassVar[str]
    # model_index.json `_class_name` values this family loads.
    pipeline_classes: ClassVar[tuple[str, ...]]
    # Whether the family can load a stage-II checkpoint and clean captions (IF); others refuse both.
    supports_stage2: ClassVar[bool] = False
    cleans_captions: ClassVar[bool] = False
    # The stock diffusers pipeline the family loaded (stage I where there are two).
    pipe: Any

    @classmethod
    @abstractmethod
    def load(cls, options: LoadOptions) -> Family: ...

    def __init__(self, pipe: Any, options: LoadOptions, device: torch.device) -> None:
        from .loading import resolved_revision  # loading.py imports this module

        self.pipe = pipe
        self.options = options
        self._device = device
        self.revision = resolved_revision(pipe, options.revision)
        if options.offload == "encoder" and device.type != "cpu":
            self.offloaded_encoder = pipe.text_encoder

    @property
    def device(self) -> torch.device:
        """Where the denoiser runs (with CPU offload: the execution device)."""
        return self._device

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """L: the lens takes hidden-state indices 0..L (0 = embeddings, i = output of block i)."""

    @property
    def has_stage2(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        """`loaded` reply fields: pipeline_class, revision, device, dtype here; a family adds defaults,
        lens, and where they apply clean_caption, notices, stage2."""
        return {
            "pipeline_class": type(self.pipe).__name__,
            "revision": self.revision,
            "device": str(self.device),
            "dtype": dtype_name(self.pipe.text_encoder.dtype),
        }

    def problem_with(self, settings: SamplerSettings) -> str | None:
        """Why this model cannot sample with ``settings``, or None."""
        if settings.stage2 is not None and not self.has_stage2:
            return "stage2 settings were sent but no stage II model is loaded"
        return None

    # Set by a family loaded with ``offload: encoder`` on an accelerator: its text encoder, kept on the CPU.
    offloaded_encoder: torch.nn.Module | None = None

    def encoding(self) -> contextlib.AbstractContextManager[None]:
        """The text encoder is on the execution device inside this context (see ``encoder_visit``)."""
        if self.offloaded_encoder is None:
            return contextlib.nullcontext()
        return encoder_visit(self.offloaded_encoder, self.device)

    @abstractmethod
    def conditioning(self, prompt: str, layers: Sequence[int]) -> dict[int, Embeds]:
        """What each of ``layers`` gives for ``prompt``, as the lens defines it: the stock pipeline's
        ``__call__`` arguments by name (``prompt_embeds``, pooled embeddings, masks), batch dim 1. The
        unconditional branch is the same for the negative prompt, passed as ``negative_<name>``."""

    def encode(self, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """Each of ``layers``' ``prompt_embeds`` for ``prompt`` (batch dim 1) alone: the one argument every
        family has, for callers that compare or reuse embeddings (tests, the benchmark's stock loop)."""
        return {layer: embeds["prompt_embeds"] for layer, embeds in self.conditioning(prompt, layers).items()}

    @abstractmethod
    def token_count(self, prompt: str) -> tuple[int, int]:
        """(tokens of ``prompt`` as the encoder would see it, special tokens included; the most the
        encoder takes). ``encode`` silently cuts a prompt longer than that, so the user is told."""

    def sample(
        self,
        prompt_embeds: torch.Tensor,
        generators: Generators,
        settings: SamplerSettings,
        on_step: StepCallback,
        **embeds: torch.Tensor,
    ) -> dict[int, np.ndarray]:
        """One run of the stock pipeline's ``__call__`` over a batch: its items' ``conditioning``
        concatenated, ``prompt_embeds`` (whose first dimension is the batch size) and the other
        arguments by name, ``negative_prompt_embeds`` among them. Returns (B, H, W, 3) uint8 images per
        stage; this one serves a single-stage pipeline."""
        text = {"prompt_embeds": prompt_embeds, **embeds}
        images = call_stock(self.pipe, settings, generators[1], on_step, **text, output_type="np")
        return {1: unit_to_uint8(images)}


@contextmanager
def encoder_visit(encoder: torch.nn.Module, device: torch.device) -> Iterator[None]:
    """``offload: encoder``: the text encoder lives on the CPU and visits the device only while a job's
    prompts are encoded, so that the denoisers have its memory the rest of the time."""
    encoder.to(device)
    try:
        yield
    finally:
        encoder.to("cpu")
        if device.type == "cuda":
            torch.cuda.empty_cache()
