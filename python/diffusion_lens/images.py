"""Image tensors → PNG bytes, rounded exactly as diffusers' ``numpy_to_pil`` does."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] (a VAE's output) → (B, H, W, 3) uint8, like the stock pipeline."""
    unit = (images / 2 + 0.5).clamp(0, 1)
    array = unit.cpu().permute(0, 2, 3, 1).float().numpy()
    return (array * 255).round().astype("uint8")


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
