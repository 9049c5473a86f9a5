"""Checkpoints as users have them: local paths checked, single weight files (A1111 / CivitAI style) given the
diffusers configuration they load with, and LoRA weights loaded into a pipeline.

A single file holds weights only. diffusers' ``from_single_file`` (``loading.from_pretrained`` calls it for a
file) reads the pipeline's configuration (model_index.json, component configs, tokenizers, scheduler) from a
diffusers folder: the one the user gives (``model.config``), else the hub repo that diffusers infers from the
file's weights (``fetch_diffusers_config``), which must be reachable or in the local Hugging Face cache.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from .base import CheckpointError, LoadOptions, LoraWeights
from .loading import CHECKPOINT_FOLDER, error_chain, hub_unreachable

# Weight files that are a whole checkpoint on their own (A1111 / CivitAI style), not a diffusers folder.
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
# What a single file's configuration is made of, as diffusers fetches it from a hub repo.
CONFIG_FILES = ["**/*.json", "*.json", "*.txt", "**/*.txt", "**/*.model"]
PASS_CONFIG = (
    "pass --config DIR (config: model.config), a local diffusers folder of the same architecture "
    "(with model_index.json)"
)
_PICKLE_RISK = (
    "and only safetensors load by default, since loading a pickle can run code: if you trust it, pass "
    "--allow-pickle (config: model.allow_pickle: true)"
)


def looks_local(model: str) -> bool:
    """A path rather than a hub id ("org/name": one slash, no backslash, no weight-file suffix)."""
    return (
        model.startswith((".", "/", "~"))
        or "\\" in model
        or model.count("/") > 1
        or model.lower().endswith(SINGLE_FILE_SUFFIXES)
        or Path(model).exists()
    )


def is_single_file(model: str) -> bool:
    """A local weight file (after ``local_path``) rather than a folder or a hub id."""
    return Path(model).is_file()


def local_path(model: str, what: str = "model", single_file: bool = True) -> str:
    """A local folder or (when ``single_file``) weight file with ~ expanded; a hub id unchanged. A local path
    that is neither a diffusers checkpoint folder nor a single-file checkpoint is an error that says what to
    pass instead."""
    if not looks_local(model):
        return model
    path = Path(model).expanduser()
    suffix = path.suffix.lower() in SINGLE_FILE_SUFFIXES
    if path.is_file():
        if not suffix:
            raise CheckpointError(
                f"{what} {model} is a file, not a {CHECKPOINT_FOLDER} nor a single-file checkpoint "
                f"({', '.join(SINGLE_FILE_SUFFIXES)})"
            )
        if not single_file:
            raise CheckpointError(
                f"{what} {model} is a single-file checkpoint; {what} must be a {CHECKPOINT_FOLDER}"
            )
        return str(path)
    if not path.is_dir():
        where = "" if str(path.absolute()) == model else f" ({path.absolute()} does not exist)"
        raise CheckpointError(f"{what} {'file' if suffix else 'folder'} not found: {model}{where}")
    if not (path / "model_index.json").is_file():
        singles = sorted(p.name for p in path.iterdir() if p.suffix.lower() in SINGLE_FILE_SUFFIXES)
        hint = (
            f"; it holds {', '.join(singles)}: pass a single-file checkpoint itself, not its folder"
            if singles and single_file
            else ""
        )
        raise CheckpointError(
            f"{what} folder {model} has no model_index.json, so it is not a diffusers checkpoint{hint}"
        )
    return str(path)


def resolve_single_file(options: LoadOptions) -> LoadOptions:
    """``options`` with a single file's configuration resolved to the local folder it loads with (the one
    given, or the hub repo's snapshot); unchanged for a folder or hub id, which may not have one."""
    model = options.model
    if not is_single_file(model):
        if options.config is not None:
            raise CheckpointError(
                f"config {options.config} is for a single-file checkpoint; model {model} is a diffusers "
                "checkpoint with its own configuration: leave --config (model.config) out"
            )
        return options
    if options.variant is not None:
        raise CheckpointError(
            f"variant {options.variant} does not apply to the single-file checkpoint {model} (one file holds "
            "its weights): leave --variant (model.variant) out"
        )
    if Path(model).suffix.lower() != ".safetensors" and not options.allow_pickle:
        raise CheckpointError(f"model {model} is a pickled single-file checkpoint, {_PICKLE_RISK}")
    config = options.config
    if config is not None and looks_local(config):
        folder = local_path(config, "config", single_file=False)
        if options.revision is not None:
            raise CheckpointError(
                f"revision {options.revision} is a hub revision, and the single-file checkpoint {model} "
                f"takes its configuration from the local folder {config}: leave --revision "
                "(model.revision) out"
            )
        return replace(options, config=folder)
    repo, inferred = (
        (config, False) if config is not None else (_inferred_repo(model, options.allow_pickle), True)
    )
    return replace(options, config=_hub_config(model, repo, inferred, options.revision))


def _header_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's weights as empty ``meta`` tensors of their shapes (read from its header only)."""
    with path.open("rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
    return {
        name: torch.empty(entry["shape"], device="meta")
        for name, entry in header.items()
        if name != "__metadata__"
    }


def _inferred_repo(model: str, allow_pickle: bool) -> str:
    """The hub repo whose configuration diffusers would load the single file with, told from its weights."""
    from diffusers.loaders.single_file_utils import fetch_diffusers_config, load_single_file_checkpoint

    path = Path(model)
    try:
        weights: Mapping[str, Any] = (
            _header_weights(path)
            if path.suffix.lower() == ".safetensors"
            else load_single_file_checkpoint(model, local_files_only=True)
        )
        return str(fetch_diffusers_config(weights)["pretrained_model_name_or_path"])
    except Exception as exc:  # an unreadable file, or a kind diffusers cannot tell
        raise CheckpointError(
            f"model {model}: cannot tell from its weights which model it is ({exc}): {PASS_CONFIG}"
        ) from exc


def _hub_config(model: str, repo: str, inferred: bool, revision: str | None) -> str:
    """The local snapshot of ``repo``'s configuration files: downloaded, or from the local cache."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    what = (
        "its pipeline configuration (model_index.json, the component configs, tokenizers) is that of the "
        f"hub repo {repo}{', which its weights look like' if inferred else ''}"
    )
    try:
        return str(snapshot_download(repo, revision=revision, allow_patterns=CONFIG_FILES))
    except Exception as exc:
        errors = list(error_chain(exc))
        if any(isinstance(error, GatedRepoError) for error in errors):
            why = f"a gated repo: accept its licence at https://huggingface.co/{repo} and log in"
        elif any(isinstance(error, RepositoryNotFoundError) for error in errors):
            why = "not a repo on the hub (or a private one)"
        elif hub_unreachable(errors):
            offline = constants.HF_HUB_OFFLINE or any(isinstance(e, OfflineModeIsEnabled) for e in errors)
            reason = "HF_HUB_OFFLINE is set" if offline else type(errors[-1]).__name__
            why = (
                f"which cannot be reached ({reason}) and is not in the local cache "
                f"(HF_HOME={constants.HF_HOME}, looked in {constants.HF_HUB_CACHE})"
            )
        else:
            raise
        raise CheckpointError(
            f"model {model} is a single-file checkpoint; {what}, {why}: {PASS_CONFIG}"
        ) from exc


def lora_problem(pipeline: Any, loras: tuple[LoraWeights, ...]) -> str | None:
    """Why ``loras`` cannot be loaded into a ``pipeline`` (a diffusers pipeline class), or None."""
    if loras and not hasattr(pipeline, "load_lora_weights"):
        return (
            f"{pipeline.__name__} has no LoRA loader in diffusers, so LoRA weights cannot be loaded into it: "
            "leave --lora (model.lora) out"
        )
    return None


def lora_file(path: str, allow_pickle: bool) -> Path:
    """The weight file of a LoRA given as a file or as the folder diffusers' save_lora_weights wrote."""
    given = Path(path).expanduser()
    if given.is_dir():
        found = sorted(given.glob("*.safetensors")) or (sorted(given.glob("*.bin")) if allow_pickle else [])
        if len(found) != 1:
            listed = f"several ({', '.join(p.name for p in found)}): pass one" if found else "none"
            raise CheckpointError(f"lora folder {path} holds {listed} LoRA weight file (.safetensors)")
        given = found[0]
    elif not given.is_file():
        raise CheckpointError(f"lora file not found: {path} ({given.absolute()} does not exist)")
    if given.suffix.lower() != ".safetensors" and not allow_pickle:
        raise CheckpointError(f"lora {path} holds pickled weights, {_PICKLE_RISK}")
    return given


def load_loras(pipe: Any, loras: tuple[LoraWeights, ...], allow_pickle: bool) -> tuple[dict[str, Any], ...]:
    """Loads ``loras`` into ``pipe`` with diffusers' LoRA loader, each as its own adapter at its scale
    (``set_adapters``): the PEFT layers then apply them in every forward pass, the text encoders' included,
    which the lens calls directly. Returns what was loaded: path, scale and the components each changed."""
    if not loras:
        return ()
    problem = lora_problem(type(pipe), loras)
    if problem is not None:
        raise CheckpointError(problem)
    if importlib.util.find_spec("peft") is None:
        raise CheckpointError(
            "LoRA weights load through diffusers' PEFT backend, and the peft package is not installed: "
            "pip install peft (python/requirements.txt pins the version), or leave --lora (model.lora) out"
        )
    names = [f"lora{index}" for index in range(len(loras))]
    for name, lora in zip(names, loras, strict=True):
        file = lora_file(lora.path, allow_pickle)
        pipe.load_lora_weights(str(file.parent), weight_name=file.name, adapter_name=name)
    pipe.set_adapters(names, adapter_weights=[float(lora.scale) for lora in loras])
    adapters: dict[str, list[str]] = pipe.get_list_adapters()
    loaded = []
    for name, lora in zip(names, loras, strict=True):
        components = sorted(component for component, held in adapters.items() if name in held)
        if not components:
            raise CheckpointError(
                f"lora {lora.path} changed no component of this {type(pipe).__name__} (none of its weights "
                "names a layer of the model): is it a LoRA of another architecture?"
            )
        loaded.append({"path": lora.path, "scale": float(lora.scale), "components": components})
    return tuple(loaded)
