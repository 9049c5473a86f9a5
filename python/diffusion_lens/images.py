"""Image tensors → PNG bytes, rounded exactly as diffusers' ``numpy_to_pil`` does."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image


def unit_to_uint8(images: np.ndarray) -> np.ndarray:
    """A pipeline's ``output_type="np"`` images, (B, H, W, 3) floats in [0, 1] → uint8, like PIL output."""
    return (images * 255).round().astype("uint8")


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] (a VAE's or IF's raw output) → (B, H, W, 3) uint8, as the stock
    pipelines turn them into PIL images."""
    unit = (images / 2 + 0.5).clamp(0, 1)
    return unit_to_uint8(unit.cpu().permute(0, 2, 3, 1).float().numpy())


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
