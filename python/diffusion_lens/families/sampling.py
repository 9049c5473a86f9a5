"""Pieces of the stock sampling loops that every family's loop shares, with one generator per item
(so that an image never depends on its batch-mates)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from diffusers.utils.torch_utils import randn_tensor


def item_noise(
    shape: tuple[int, ...], generators: list[torch.Generator], device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """(B, *shape) noise, item i drawn from generators[i]: the numbers the stock pipeline draws for a
    batch of one with that generator."""
    return torch.cat([randn_tensor((1, *shape), generator=g, device=device, dtype=dtype) for g in generators])


def step_kwargs(scheduler: Any, generators: list[torch.Generator]) -> dict[str, Any]:
    """The stock pipelines' ``prepare_extra_step_kwargs`` (eta 0, the generators where the scheduler
    draws noise), with one generator per item."""
    parameters = set(inspect.signature(scheduler.step).parameters)
    kwargs: dict[str, Any] = {}
    if "eta" in parameters:
        kwargs["eta"] = 0.0
    if "generator" in parameters:
        kwargs["generator"] = generators
    return kwargs
