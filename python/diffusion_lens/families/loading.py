"""Loading and placing checkpoints: what every family does the same way."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .base import CheckpointError, LoadOptions, pipeline_text_encoders

_SNAPSHOT = re.compile(r"snapshots[/\\]([0-9a-f]{40})")
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt")
CHECKPOINT_FOLDER = "diffusers checkpoint folder (with model_index.json)"
# The hub's HTTP client has changed (requests, httpx, httpx2): its transport errors are known by name.
_TRANSPORT_ERRORS = {
    "ConnectionError",
    "ConnectError",
    "ConnectTimeout",
    "TransportError",
    "TimeoutException",
}


def pipeline_class(model: str, revision: str | None) -> str:
    """The `_class_name` of a checkpoint's model_index.json ('' when it names none)."""
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(model, revision=revision)
    except Exception as exc:
        error = _user_error(model, exc)
        if error is None:
            raise
        raise error from exc
    return str(config.get("_class_name", ""))


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it was raised from or while handling: diffusers wraps the hub's errors in OSError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def hub_unreachable(errors: list[BaseException]) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError

    return any(
        isinstance(error, (LocalEntryNotFoundError, ConnectionError, TimeoutError))
        or any(cls.__name__ in _TRANSPORT_ERRORS for cls in type(error).__mro__)
        for error in errors
    ) or any("not fully cached locally" in str(error) for error in errors)


def _user_error(model: str, exc: Exception, options: LoadOptions | None = None) -> CheckpointError | None:
    """A message the user can act on for a load failure that has one (hub unreachable, not on the hub,
    pickled weights only); None for the rest, which keep diffusers' own message."""
    errors = list(error_chain(exc))
    if options is not None and not options.allow_pickle:
        pickles = _pickle_only(model, errors, options.variant)
        if pickles is not None:
            return CheckpointError(
                f"{model} {pickles}, and only safetensors load by default, since loading a pickle can run "
                "code: if you trust this checkpoint, pass --allow-pickle (config: model.allow_pickle: true) "
                "to load pickled weights"
            )
    problem = hub_problem(model, f'"{model}"', errors, f"a local {CHECKPOINT_FOLDER}")
    return None if problem is None else CheckpointError(problem)


def hub_problem(model: str, subject: str, errors: list[BaseException], local: str) -> str | None:
    """What the user can do when loading ``model`` (named ``subject`` in the message) from the hub failed
    with ``errors``: gated, not on the hub, or the hub unreachable and not cached; ``local`` is what to
    pass instead. None for a local folder and for other failures. Shared by checkpoints and scorers."""
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, OfflineModeIsEnabled, RepositoryNotFoundError

    if Path(model).expanduser().exists():
        return None  # a local folder: no hub involved
    if any(isinstance(error, GatedRepoError) for error in errors):
        return (
            f"{subject} is a gated model on the Hugging Face hub: accept its licence at "
            f"https://huggingface.co/{model} and log in (hf auth login), or pass {local}"
        )
    if any(isinstance(error, RepositoryNotFoundError) for error in errors):
        return (
            f"{subject} is neither a local folder nor a model on the Hugging Face hub (or it is private: "
            f"log in with hf auth login): check the name, or pass {local}"
        )
    if not hub_unreachable(errors):
        return None
    offline = constants.HF_HUB_OFFLINE or any(isinstance(error, OfflineModeIsEnabled) for error in errors)
    why = "HF_HUB_OFFLINE is set" if offline else str(errors[-1]) or type(errors[-1]).__name__
    online = "unset HF_HUB_OFFLINE, connect to the internet" if offline else "connect to the internet"
    return (
        f"cannot reach the Hugging Face hub for {subject} ({why}) and it is not (fully) in the local cache "
        f"(HF_HOME={constants.HF_HOME}, looked in {constants.HF_HUB_CACHE}): {online} and run again to "
        f"download it, set HF_HOME to a cache that has it, or pass {local}"
    )


def _pickle_only(model: str, errors: list[BaseException], variant: str | None) -> str | None:
    """Which weights are pickled only, when that is why safetensors-only loading failed; else None."""
    if not any("safetensors" in str(error) for error in errors):
        return None
    folder = Path(model).expanduser()
    if not folder.is_dir():
        # A hub checkpoint: diffusers checks its file list before it downloads anything.
        found = any("Could not find the necessary `safetensors` weights" in str(e) for e in errors)
        return f"has no safetensors weights{f' ({variant} variant)' if variant else ''}" if found else None
    pickled = [
        path.relative_to(folder).as_posix()
        for component in sorted(p for p in folder.iterdir() if p.is_dir())
        if not any(component.glob("*.safetensors"))
        for pattern in PICKLE_PATTERNS
        for path in sorted(component.glob(pattern))
    ]
    return f"has pickled weights with no safetensors copy ({', '.join(pickled)})" if pickled else None


def resolved_revision(pipe: Any, requested: str | None) -> str | None:
    """The hub commit a pipeline was loaded from (read off its snapshot folder), else what was asked."""
    match = _SNAPSHOT.search(str(pipe.config.get("_name_or_path", "")))
    return match.group(1) if match else requested


def from_pretrained(
    pipeline: type[Any], model: str, revision: str | None, options: LoadOptions, **components: Any
) -> Any:
    """``pipeline.from_pretrained`` as every family loads a checkpoint: in ``options.dtype``; safetensors
    only, unless pickles were explicitly allowed; the named weight variant (e.g. fp16 copies, half the
    download) when one is set; no progress bars (the worker reports its own progress). A single weight file
    loads with ``from_single_file`` instead (see ``from_single_file``)."""
    if Path(model).is_file():
        return from_single_file(pipeline, model, options, **components)
    try:
        pipe = pipeline.from_pretrained(
            model,
            revision=revision,
            dtype=options.dtype,
            use_safetensors=None if options.allow_pickle else True,
            variant=options.variant,
            **components,
        )
    except Exception as exc:
        error = _user_error(model, exc, options)
        if error is None:
            raise
        raise error from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def from_single_file(pipeline: type[Any], model: str, options: LoadOptions, **components: Any) -> Any:
    """``pipeline.from_single_file``: the weights of the single file ``model`` (its pickle allowed, or a
    .safetensors: ``checkpoints.resolve_single_file`` checked) with the configuration of the local diffusers
    folder ``options.config`` (model_index.json, component configs, tokenizers, scheduler), in
    ``options.dtype``. A component the file lacks (e.g. the text encoders beside a UNet- or transformer-only
    file) is read from that folder when it has its weights, as diffusers does."""
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    if not hasattr(pipeline, "from_single_file"):
        raise CheckpointError(
            f"model {model} is a single-file checkpoint, and diffusers cannot load a {pipeline.__name__} "
            f"from one (it has no from_single_file): pass a {CHECKPOINT_FOLDER}"
        )
    if options.config is None:
        raise CheckpointError(f"model {model} is a single-file checkpoint without a configuration folder")
    try:
        pipe = pipeline.from_single_file(
            model, config=options.config, dtype=options.dtype, local_files_only=True, **components
        )
    except SingleFileComponentError as exc:
        missing = str(exc).split(". ")[0]
        raise CheckpointError(
            f"model {model}: {missing}, and the config folder {options.config} has no weights for it either: "
            "pass --config a full diffusers folder of the same model (model.config), whose weights fill in "
            "the components the file lacks"
        ) from exc
    # diffusers leaves a weight it did not find in the file uninitialised (on the meta device).
    for name, component in pipe.components.items():
        if isinstance(component, torch.nn.Module) and any(p.is_meta for p in component.parameters()):
            raise CheckpointError(
                f"model {model}: the single file does not hold all weights of the {name} its configuration "
                f"({options.config}) describes: is it a checkpoint of another architecture?"
            )
    # What from_pretrained records: the config folder, whose hub snapshot (if any) is the revision loaded.
    pipe.register_to_config(_name_or_path=options.config)
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
    if options.offload == "encoder":
        for encoder in pipeline_text_encoders(pipe):
            encoder.to("cpu")
    return torch.device(options.device)
