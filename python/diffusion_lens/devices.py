"""Device and dtype choices, recognising out-of-memory errors across backends, and the library versions."""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def best_device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return best_device()
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' requested but torch.cuda.is_available() is False (CPU build of torch?)"
        )
    if requested == "mps" and best_device() != "mps":
        raise ValueError("device 'mps' requested but the MPS backend is not available")
    return requested


def resolve_dtype(requested: str, device: str, accelerated: str = "fp16") -> torch.dtype:
    """``auto``: ``accelerated`` (fp16, or a family's bf16) on accelerators, fp32 on CPU (half precision is
    slow or unsupported there)."""
    if requested == "auto":
        return DTYPES[accelerated] if device in ("cuda", "mps") else torch.float32
    return DTYPES[requested]


def dtype_name(dtype: torch.dtype) -> str:
    return next(name for name, value in DTYPES.items() if value == dtype)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def synchronize(device: torch.device) -> None:
    """Waits for the device's queued work (CUDA; the CPU's is done already). Used between phases of a
    request, never inside the sampling loop."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def empty_cache(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
    elif device == "mps":
        torch.mps.empty_cache()


def library_versions() -> dict[str, str]:
    """The Python, torch, diffusers and transformers versions, as `ready` and the API's manifests say them."""
    import sys

    import diffusers
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }
