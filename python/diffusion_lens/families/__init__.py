"""Pipeline families, and detection of a checkpoint's family from its model_index.json."""

from __future__ import annotations

from dataclasses import replace

import diffusers
import torch

from ..devices import resolve_dtype
from .acceleration import accelerate
from .base import (
    OFFLOAD_MODES,
    POOLED_MODES,
    STOCK_READOUT,
    CheckpointError,
    CheckpointSource,
    Embeds,
    Family,
    LoadOptions,
    LoraWeights,
    Readout,
    SamplerSettings,
    Stage2Settings,
)
from .checkpoints import load_loras, local_path, lora_file, lora_problem, resolve_single_file
from .deepfloyd_if import DeepFloydIFFamily
from .flux import FluxFamily
from .loading import pipeline_class
from .pixart import PixArtFamily
from .sana import SanaFamily
from .sd import StableDiffusionFamily
from .sd3 import StableDiffusion3Family
from .sdxl import StableDiffusionXLFamily

FAMILIES: dict[str, type[Family]] = {
    family.name: family
    for family in (
        StableDiffusionFamily,
        DeepFloydIFFamily,
        PixArtFamily,
        StableDiffusionXLFamily,
        FluxFamily,
        StableDiffusion3Family,
        SanaFamily,
    )
}

# Pipeline classes that are not a family's first stage but belong to one, with what to do instead.
_HINTS = {
    "IFSuperResolutionPipeline": "it is a DeepFloyd IF stage II: load the stage I model (IFPipeline) and "
    "give this one as stage2.model",
}

__all__ = [
    "FAMILIES",
    "OFFLOAD_MODES",
    "POOLED_MODES",
    "STOCK_READOUT",
    "CheckpointError",
    "CheckpointSource",
    "Embeds",
    "Family",
    "LoadOptions",
    "LoraWeights",
    "Readout",
    "SamplerSettings",
    "Stage2Settings",
    "detect_family",
    "load_family",
    "wrap_pipeline",
]


def _family_of(class_name: str) -> str | None:
    return next((name for name, family in FAMILIES.items() if class_name in family.pipeline_classes), None)


def detect_family(model: str, revision: str | None = None) -> str:
    """The family whose pipeline class the checkpoint's model_index.json names."""
    return _family_for(model, pipeline_class(model, revision))


def _family_for(model: str, class_name: str) -> str:
    found = _family_of(class_name)
    if found is not None:
        return found
    supported = ", ".join(f"{c} ({n})" for n, f in FAMILIES.items() for c in f.pipeline_classes)
    hint = f"; {_HINTS[class_name]}" if class_name in _HINTS else ""
    raise CheckpointError(
        f"{model}: pipeline class {class_name or '(none)'!r} is not supported{hint}; supported: {supported}"
    )


def load_family(options: LoadOptions, family: str | None) -> Family:
    options = resolve_single_file(replace(options, model=local_path(options.model)))
    if options.stage2 is not None:
        stage2 = local_path(options.stage2.model, "stage II model", single_file=False)
        options = replace(options, stage2=replace(options.stage2, model=stage2))
    if family is not None and family not in FAMILIES:
        raise CheckpointError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    # A single file's family is its configuration's.
    class_name = pipeline_class(options.config_model, options.revision)
    if family is None:
        name = _family_for(options.config_model, class_name)
    else:
        # An explicit family may load a pipeline class no family claims, never one of another family's.
        name, actual = family, _family_of(class_name)
        if actual is not None and actual != family:
            raise CheckpointError(
                f"{options.model} is a {class_name} checkpoint (family {actual}), not {family}: "
                f"use family {actual} or auto"
            )
    problem = lora_problem(getattr(diffusers, class_name, object), options.lora)
    if problem is not None:
        raise CheckpointError(f"the {name} family's {problem}")
    for lora in options.lora:
        lora_file(lora.path, options.allow_pickle)  # a missing or pickled file, before the model loads
    chosen = FAMILIES[name]
    if options.stage2 is not None and chosen.stages < 2:
        raise CheckpointError(f"the {name} family has no stage II; run stage 1 only (stages: [1])")
    if options.auto_dtype:
        options = replace(options, dtype=resolve_dtype("auto", options.device, chosen.accelerator_dtype))
    problem = chosen.options_problem("load", options.family_options, "family_options")
    if problem is not None:
        raise CheckpointError(problem)
    if options.offload not in OFFLOAD_MODES:
        raise CheckpointError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not {options.offload!r}")
    loaded = chosen.load(options)
    loaded.loras = load_loras(loaded.pipe, options.lora, options.allow_pickle)
    # After the LoRA weights: compiling traces the modules as they will run.
    loaded.acceleration = accelerate(loaded.pipelines(), loaded.device, options.compile, options.offload)
    return loaded


def wrap_pipeline(pipe: object, family_options: dict[str, object] | None = None) -> Family:
    """An already-loaded stock diffusers pipeline as its family, without reloading anything (the Python API):
    the family is the one whose ``pipeline_classes`` name ``type(pipe)``; the device is where the pipeline
    executes (its execution device under CPU offload), the dtype its own. DeepFloyd IF wraps stage I only."""
    class_name = type(pipe).__name__
    name = _family_of(class_name)
    if name is None:
        supported = ", ".join(c for f in FAMILIES.values() for c in f.pipeline_classes)
        hint = (
            "; it is a DeepFloyd IF stage II: pass the stage I IFPipeline (the Python API runs stage I only)"
            if class_name == "IFSuperResolutionPipeline"
            else ""
        )
        raise CheckpointError(
            f"a {class_name} is not a pipeline the lens supports{hint}; supported: {supported}"
        )
    chosen = FAMILIES[name]
    problem = chosen.options_problem("load", family_options or {}, "family_options")
    if problem is not None:
        raise CheckpointError(problem)
    device = getattr(pipe, "_execution_device", None) or getattr(pipe, "device", None)
    device = torch.device(device if device is not None else "cpu")
    model = str(getattr(pipe, "config", {}).get("_name_or_path", "") or class_name)
    options = LoadOptions(
        model=model,
        revision=None,
        device=device.type,
        dtype=getattr(pipe, "dtype", torch.float32),
        offload="none",
        allow_pickle=False,
        family_options=dict(family_options or {}),
    )
    if chosen is DeepFloydIFFamily:
        return DeepFloydIFFamily(pipe, None, options, device)  # type: ignore[arg-type]
    return chosen(pipe, options, device)  # type: ignore[call-arg]
