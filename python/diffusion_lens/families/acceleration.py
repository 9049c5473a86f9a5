"""A loaded pipeline set up to run fast on a GPU; its modules, weights and loop stay the stock ones.

On CUDA, at load (``accelerate``):
- the UNet and the VAE in ``channels_last`` memory format (faster convolutions on tensor cores);
- attention through PyTorch's scaled-dot-product attention: diffusers' default on torch 2, checked; the
  classic processors are swapped for their SDPA twins, anything else is named in a notice;
- the VAE decodes a batch one image at a time (``enable_slicing``), so decode memory does not grow with the
  batch (slicing does not change pixels).

On any device, when the load asks for it (``compile``): ``torch.compile`` of each stage's denoiser (UNet or
transformer), which compiles on its first run at each shape (timed in the request's ``timings.compile_ms``).

Per request (``VaeTiling``): VAE tiling changes pixels, so it is used only on CUDA for an image side of
TILING_SIDE or more, or after decoding a single image ran out of memory (remembered for that size), and
always with a notice.

The CPU and MPS are left as loaded unless compile is asked, so their images are the stock pipeline's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# torch.compile's backend (tests may use "eager", which only traces).
COMPILE_BACKEND = "inductor"
# The image side from which the VAE decodes in tiles on CUDA.
TILING_SIDE = 2048
# diffusers' classic attention processors and their SDPA twins.
_SDPA_TWINS = {"AttnProcessor": "AttnProcessor2_0", "AttnAddedKVProcessor": "AttnAddedKVProcessor2_0"}


@dataclass
class Acceleration:
    """What ``accelerate`` did to a family's pipelines, and what it learns as requests run."""

    notices: list[str] = field(default_factory=list)  # for the loaded reply
    compiled: list[str] = field(default_factory=list)  # the denoisers compiled, e.g. ["unet"]
    # (height, width) at which decoding one image ran out of memory: decoded in tiles from then on.
    tiled_sizes: set[tuple[int, int]] = field(default_factory=set)


def denoiser_of(pipe: Any) -> tuple[str, torch.nn.Module] | None:
    """A pipeline's denoiser and its component name: ``unet`` or ``transformer``."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module):
            return name, module
    return None


def attention_kind(processor: Any) -> str:
    """``sdpa`` for a processor that runs torch 2's attention: diffusers' ``*2_0`` processors (SDPA; Sana's
    linear attention needs none), and the dispatching ones (``_attention_backend``) at the native backend;
    else what it is."""
    name = type(processor).__name__
    if name.endswith("2_0"):
        return "sdpa"
    if hasattr(processor, "_attention_backend"):
        backend = processor._attention_backend or os.environ.get("DIFFUSERS_ATTN_BACKEND", "native")
        backend = str(getattr(backend, "value", backend))
        return "sdpa" if "native" in backend else f"{name} ({backend} backend)"
    return name


def use_sdpa(denoiser: torch.nn.Module) -> list[str]:
    """Swaps the classic attention processors of ``denoiser`` for their SDPA twins; returns the kinds of
    those that are still not SDPA (empty: all are)."""
    import diffusers.models.attention_processor as processors

    found: dict[str, Any] = dict(getattr(denoiser, "attn_processors", {}))
    if not found:
        return []
    swapped = {
        name: getattr(processors, _SDPA_TWINS[type(p).__name__])() if type(p).__name__ in _SDPA_TWINS else p
        for name, p in found.items()
    }
    if any(swapped[name] is not found[name] for name in found):
        denoiser.set_attn_processor(swapped)  # type: ignore[operator]
    return sorted({kind for p in swapped.values() if (kind := attention_kind(p)) != "sdpa"})


def accelerate(pipelines: Sequence[Any], device: torch.device, compile: bool, offload: str) -> Acceleration:
    """Sets up ``pipelines`` (a family's, stage I first) as the module docstring says."""
    done = Acceleration()
    for stage, pipe in enumerate(pipelines, start=1):
        found = denoiser_of(pipe)
        where = "" if stage == 1 else f"stage {stage} "
        if device.type == "cuda":
            for module in (getattr(pipe, "unet", None), getattr(pipe, "vae", None)):
                if isinstance(module, torch.nn.Module):
                    module.to(memory_format=torch.channels_last)
            vae = getattr(pipe, "vae", None)
            if vae is not None and hasattr(vae, "enable_slicing"):
                vae.enable_slicing()
            if found is not None:
                others = use_sdpa(found[1])
                if others:
                    done.notices.append(
                        f"attention: the {where}{found[0]} runs {', '.join(others)}, not PyTorch's SDPA"
                    )
        if compile and found is not None:
            if offload == "model" and device.type == "cuda":
                done.notices.append(
                    f"compile: the {where}{found[0]} is not compiled under offload: model (its weights move "
                    "between CPU and GPU at every call); use offload: encoder or none to compile it"
                )
                continue
            found[1].compile(backend=COMPILE_BACKEND)
            done.compiled.append(f"{where}{found[0]}")
    return done


class VaeTiling:
    """VAE tiling for one request (``with VaeTiling(...) as tiling``): on from the start when ``wanted``,
    or later by ``enable``; the VAEs are left as they were afterwards (one tiled already, by the user of
    the Python API, is not touched)."""

    def __init__(self, pipelines: Sequence[Any], wanted: bool) -> None:
        vaes = [getattr(pipe, "vae", None) for pipe in pipelines]
        self._vaes = [
            vae for vae in vaes if hasattr(vae, "enable_tiling") and not getattr(vae, "use_tiling", False)
        ]
        self._wanted = wanted
        self.on = False

    @property
    def available(self) -> bool:
        """Whether there is a VAE to tile that is not tiled yet."""
        return bool(self._vaes) and not self.on

    def enable(self) -> None:
        for vae in self._vaes:
            vae.enable_tiling()
        self.on = bool(self._vaes)

    def __enter__(self) -> VaeTiling:
        if self._wanted:
            self.enable()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            for vae in self._vaes:
                vae.disable_tiling()
            self.on = False


def tiling_wanted(device: torch.device, height: int, width: int, acceleration: Acceleration) -> bool:
    """Whether a request at ``height`` x ``width`` decodes in tiles from its start (CUDA only)."""
    if device.type != "cuda":
        return False
    return max(height, width) >= TILING_SIDE or (height, width) in acceleration.tiled_sizes
