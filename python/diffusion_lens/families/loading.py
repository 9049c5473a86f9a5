"""Loading and placing checkpoints: what every family does the same way."""

from __future__ import annotations

import re
from typing import Any

import torch

from .base import LoadOptions

_SNAPSHOT = re.compile(r"snapshots[/\\]([0-9a-f]{40})")


def pipeline_class(model: str, revision: str | None) -> str:
    """The `_class_name` of a checkpoint's model_index.json ('' when it names none)."""
    from diffusers import DiffusionPipeline

    config = DiffusionPipeline.load_config(model, revision=revision)
    return str(config.get("_class_name", ""))


def resolved_revision(pipe: Any, requested: str | None) -> str | None:
    """The hub commit a pipeline was loaded from (read off its snapshot folder), else what was asked."""
    match = _SNAPSHOT.search(str(pipe.config.get("_name_or_path", "")))
    return match.group(1) if match else requested


def from_pretrained(
    pipeline: type[Any], model: str, revision: str | None, options: LoadOptions, **components: Any
) -> Any:
    """``pipeline.from_pretrained`` as every family loads a checkpoint: in ``options.dtype``; safetensors
    only, unless pickles were explicitly allowed; the named weight variant (e.g. fp16 copies, half the
    download) when one is set; no progress bars (the worker reports its own progress)."""
    pipe = pipeline.from_pretrained(
        model,
        revision=revision,
        dtype=options.dtype,
        use_safetensors=None if options.allow_pickle else True,
        variant=options.variant,
        **components,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def place(pipe: Any, options: LoadOptions) -> torch.device:
    """Puts a pipeline where ``options.offload`` says; returns the device its denoiser runs on.

    ``model``: diffusers' model CPU offload (each model visits the GPU while it runs; CUDA only).
    ``encoder``: everything on the device but the text encoder, which the family moves there only to
    encode (see ``Family.encoding``).
    """
    if options.offload == "model" and options.device == "cuda":
        pipe.enable_model_cpu_offload()
        return pipe._execution_device
    pipe.to(options.device)
    encoder = getattr(pipe, "text_encoder", None)
    if options.offload == "encoder" and encoder is not None:
        encoder.to("cpu")
    return torch.device(options.device)
