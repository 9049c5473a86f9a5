"""Diffusion Lens worker: hidden states of a text encoder → images, layer by layer.

The Python API (for notebooks): ``diffusion_lens.lens(pipe, "a red apple", layers="all", seeds=[0, 1])``
on an already-loaded diffusers pipeline returns a ``LensResult`` (see api.py). It is imported on first
use, so that ``import diffusion_lens`` (the worker's protocol side) does not import torch. The
family-independent lens that the worker and the API share is ``generation.py``."""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
PROTOCOL_VERSION = 1

__all__ = [
    "PROTOCOL_VERSION",
    "LensResult",
    "__version__",
    "lens",
    "resolve_layers",
    "save_embeds",
    "wrap_pipeline",
]

if TYPE_CHECKING:
    from .ablations import save_embeds
    from .api import LensResult, lens
    from .families import wrap_pipeline
    from .layer_spec import resolve_layers

# torchvision is left out on purpose: transformers' PIL image processors are the ones we use, so its
# notice that it falls back to them (at every start, from diffusers' imports) says nothing to act on.
logging.getLogger("transformers.utils.import_utils").addFilter(
    lambda record: "requires torchvision (not installed)" not in record.getMessage()
)

_LAZY = {
    "lens": "api",
    "LensResult": "api",
    "wrap_pipeline": "families",
    "resolve_layers": "layer_spec",
    "save_embeds": "ablations",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
