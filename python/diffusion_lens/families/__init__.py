"""Pipeline families, and detection of a checkpoint's family from its model_index.json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..devices import resolve_dtype
from .base import (
    OFFLOAD_MODES,
    POOLED_MODES,
    STOCK_READOUT,
    CheckpointError,
    CheckpointSource,
    Embeds,
    Family,
    LoadOptions,
    Readout,
    SamplerSettings,
    Stage2Settings,
)
from .deepfloyd_if import DeepFloydIFFamily
from .flux import FluxFamily
from .loading import CHECKPOINT_FOLDER, pipeline_class
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
    "Readout",
    "SamplerSettings",
    "Stage2Settings",
    "detect_family",
    "load_family",
]


def _family_of(class_name: str) -> str | None:
    return next((name for name, family in FAMILIES.items() if class_name in family.pipeline_classes), None)


def detect_family(model: str, revision: str | None = None) -> str:
    """The family whose pipeline class the checkpoint's model_index.json names."""
    class_name = pipeline_class(model, revision)
    found = _family_of(class_name)
    if found is not None:
        return found
    supported = ", ".join(f"{c} ({n})" for n, f in FAMILIES.items() for c in f.pipeline_classes)
    hint = f"; {_HINTS[class_name]}" if class_name in _HINTS else ""
    raise CheckpointError(
        f"{model}: pipeline class {class_name or '(none)'!r} is not supported{hint}; supported: {supported}"
    )


# Weight files that are a whole checkpoint on their own (A1111 / CivitAI style), not a diffusers folder.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
_SINGLE_FILE = (
    f"single-file checkpoints are not supported yet: pass a {CHECKPOINT_FOLDER} instead "
    "(diffusers' from_single_file(...).save_pretrained(folder) converts one)"
)


def _looks_local(model: str) -> bool:
    """A path rather than a hub id ("org/name": one slash, no backslash, no weight-file suffix)."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or model.lower().endswith(SINGLE_FILE_SUFFIXES)
        or Path(model).exists()
    )


def _local_path(model: str, what: str = "model") -> str:
    """A local folder with ~ expanded; a hub id unchanged. A local path that is no diffusers checkpoint
    folder is an error that says what to pass instead."""
    if not _looks_local(model):
        return model
    path = Path(model).expanduser()
    single_file = path.suffix.lower() in SINGLE_FILE_SUFFIXES
    if path.is_file():
        if single_file:
            raise CheckpointError(f"{what} {model} is a single-file checkpoint; {_SINGLE_FILE}")
        raise CheckpointError(f"{what} {model} is a file, not a folder: pass a {CHECKPOINT_FOLDER}")
    if not path.is_dir():
        where = "" if str(path.absolute()) == model else f" ({path.absolute()} does not exist)"
        hint = f"; {_SINGLE_FILE}" if single_file else ""
        raise CheckpointError(f"{what} {'file' if single_file else 'folder'} not found: {model}{where}{hint}")
    if not (path / "model_index.json").is_file():
        singles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SINGLE_FILE_SUFFIXES)
        hint = f"; it holds {', '.join(singles)}: {_SINGLE_FILE}" if singles else ""
        raise CheckpointError(
            f"{what} folder {model} has no model_index.json, so it is not a diffusers checkpoint{hint}"
        )
    return str(path)


def load_family(options: LoadOptions, family: str | None) -> Family:
    options = replace(options, model=_local_path(options.model))
    if options.stage2 is not None:
        options = replace(
            options, stage2=replace(options.stage2, model=_local_path(options.stage2.model, "stage II model"))
        )
    if family is not None and family not in FAMILIES:
        raise CheckpointError(f"unknown family {family!r}; supported: {', '.join(FAMILIES)}")
    if family is None:
        name = detect_family(options.model, options.revision)
    else:
        # An explicit family may load a pipeline class no family claims, never one of another family's.
        name, class_name = family, pipeline_class(options.model, options.revision)
        actual = _family_of(class_name)
        if actual is not None and actual != family:
            raise CheckpointError(
                f"{options.model} is a {class_name} checkpoint (family {actual}), not {family}: "
                f"use family {actual} or auto"
            )
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
    return chosen.load(options)
