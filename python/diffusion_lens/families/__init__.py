"""Pipeline families, and detection of a checkpoint's family from its model_index.json."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .base import Family, LoadOptions, SamplerSettings
from .sd import StableDiffusionFamily

FAMILIES: dict[str, type[Family]] = {family.name: family for family in (StableDiffusionFamily,)}

__all__ = [
    "FAMILIES",
    "Family",
    "LoadOptions",
    "SamplerSettings",
    "detect_family",
    "load_family",
]


def _pipeline_class(model: str, revision: str | None) -> str:
    from diffusers import DiffusionPipeline

    config = DiffusionPipeline.load_config(model, revision=revision)
    return str(config.get("_class_name", ""))


def detect_family(model: str, revision: str | None = None) -> str:
    """The family whose pipeline class the checkpoint's model_index.json names."""
    class_name = _pipeline_class(model, revision)
    for name, family in FAMILIES.items():
        if class_name in family.pipeline_classes:
            return name
    supported = ", ".join(f"{c} ({n})" for n, f in FAMILIES.items() for c in f.pipeline_classes)
    raise ValueError(
        f"{model}: pipeline class {class_name or '(none)'!r} is not supported; supported: {supported}"
    )


def load_family(options: LoadOptions, family: str | None) -> Family:
    looks_local = options.model.startswith((".", "/", "~")) or Path(options.model).exists()
    if looks_local and not Path(options.model).expanduser().is_dir():
        raise FileNotFoundError(f"model folder not found: {options.model}")
    if looks_local:
        options = replace(options, model=str(Path(options.model).expanduser()))
    name = family or detect_family(options.model, options.revision)
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; supported: {', '.join(FAMILIES)}")
    return FAMILIES[name].load(options)
