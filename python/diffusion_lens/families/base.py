"""What every pipeline family provides to the lens (lens.py drives it; server.py never sees torch)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass(frozen=True)
class SamplerSettings:
    steps: int
    guidance: float
    height: int
    width: int
    scheduler: str | None  # None or "default": the checkpoint's own


@dataclass(frozen=True)
class LoadOptions:
    model: str
    revision: str | None
    device: str  # resolved: cpu, cuda or mps
    dtype: torch.dtype
    offload: bool
    allow_pickle: bool


# Called after each denoising step with (steps done, total steps of this run).
StepCallback = Callable[[int, int], None]


class Family(ABC):
    """One pipeline family: how to load it, read its encoder's hidden states, and sample an image."""

    name: ClassVar[str]
    # model_index.json `_class_name` values this family loads.
    pipeline_classes: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def load(cls, options: LoadOptions) -> Family: ...

    @property
    @abstractmethod
    def device(self) -> torch.device:
        """Where the denoiser runs (with CPU offload: the execution device)."""

    @property
    @abstractmethod
    def num_layers(self) -> int:
        """L: the lens takes hidden-state indices 0..L (0 = embeddings, i = output of block i)."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """`loaded` reply fields: pipeline_class, revision, device, dtype, defaults, lens."""

    @abstractmethod
    def encode(self, prompt: str, layers: Sequence[int]) -> dict[int, torch.Tensor]:
        """The conditioning each of ``layers`` gives for ``prompt`` (batch dim 1), as the lens defines it."""

    @abstractmethod
    def sample(
        self,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        generators: list[torch.Generator],
        settings: SamplerSettings,
        on_step: StepCallback,
    ) -> np.ndarray:
        """One sampling run over a batch; returns (B, H, W, 3) uint8 images."""
