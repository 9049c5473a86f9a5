"""Loading a scorer's transformers model and processor by hub id or local folder, with errors the user can
act on (the worker's ``load_failed``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..devices import dtype_name, resolve_device, resolve_dtype
from .base import ScorerLoadError, ScorerSpec


def is_local(model: str) -> bool:
    """A local folder, as the diffusion model's rule has it: starts with ``.``, ``/`` or ``~``, has a
    backslash or more than one ``/``, or exists."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or Path(model).expanduser().exists()
    )


def placement(spec: ScorerSpec) -> tuple[str, torch.dtype]:
    """The device and dtype a spec asks for: auto = the best device, fp16 there (fp32 on the CPU)."""
    try:
        device = resolve_device(spec.device)
    except ValueError as exc:
        raise ScorerLoadError(f"scorer.device: {exc}") from None
    return device, resolve_dtype(spec.dtype, device)


def _user_error(spec: ScorerSpec, what: str, exc: Exception) -> ScorerLoadError | None:
    from ..families.loading import error_chain, hub_problem  # here: scoring needs no diffusers

    model = spec.model or ""
    errors = list(error_chain(exc))
    local = f"a local folder with {what} (as save_pretrained writes them)"
    if any("safetensors" in str(error) and "not find" in str(error).lower() for error in errors):
        return ScorerLoadError(
            f'{spec.kind} scorer model "{model}" has no safetensors weights, and only safetensors load '
            "(loading a pickle can run code): convert it (save_pretrained writes safetensors) or pass "
            f"{local}"
        )
    problem = hub_problem(model, f'the {spec.kind} scorer model "{model}"', errors, local)
    return None if problem is None else ScorerLoadError(problem)


def from_pretrained(loader: Any, spec: ScorerSpec, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(spec.model, ...)`` (a model class or a processor class), safetensors only
    for models; a missing local folder, an unreachable hub, an unknown or gated repo become
    ScorerLoadError; other failures are raised as they are."""
    model = spec.model
    if model is None:
        raise ScorerLoadError(f"the {spec.kind} scorer needs a model: set scorer.model to a hub id or folder")
    path = Path(model).expanduser()
    if is_local(model) and not path.exists():
        raise ScorerLoadError(
            f"{spec.kind} scorer model folder not found: {model} ({path.resolve()} does not exist)"
        )
    try:
        return loader.from_pretrained(str(path) if path.exists() else model, revision=spec.revision, **kwargs)
    except Exception as exc:
        error = _user_error(spec, what, exc)
        if error is None:
            raise
        raise error from exc


def hub_revision(spec: ScorerSpec, model: Any) -> str | None:
    """The hub commit a model was loaded from; None for a local folder."""
    if spec.model is None or Path(spec.model).expanduser().exists():
        return None
    return getattr(model.config, "_commit_hash", None) or spec.revision


def library_version() -> str:
    import transformers

    return f"transformers {transformers.__version__}, torch {torch.__version__}"


__all__ = ["dtype_name", "from_pretrained", "hub_revision", "is_local", "library_version", "placement"]
