"""`python -m diffusion_lens.doctor`: one JSON object describing this interpreter. Never raises."""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

# import name → pip name, for the fix we print
PACKAGES = {
    "torch": "torch",
    "diffusers": "diffusers",
    "transformers": "transformers",
    "zmq": "pyzmq",
    "msgpack": "msgpack",
    "safetensors": "safetensors",
    "PIL": "pillow",
    "numpy": "numpy",
    "accelerate": "accelerate",
    "bs4": "beautifulsoup4",  # DeepFloyd IF's caption cleaning
    "ftfy": "ftfy",
    "jsonschema": "jsonschema",  # protocol validation
    "peft": "peft",  # LoRA weights (model.lora), through diffusers' LoRA loader
}


def report() -> dict[str, Any]:
    packages: dict[str, str | None] = {}
    problems: list[str] = []
    for module, pip_name in PACKAGES.items():
        try:
            packages[module] = str(getattr(importlib.import_module(module), "__version__", "installed"))
        except Exception as exc:  # noqa: BLE001 - a broken install raises more than ImportError
            packages[module] = None
            problems.append(
                f"{module} cannot be imported ({type(exc).__name__}: {exc}); fix: pip install {pip_name}"
            )
    families: list[dict[str, Any]] = []
    if packages["diffusers"] and packages["torch"]:
        try:
            from .families import FAMILIES

            families = [family.capabilities() for family in FAMILIES.values()]
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            problems.append(f"the pipeline families cannot be loaded ({type(exc).__name__}: {exc})")
    device, cuda = "cpu", {"available": False, "devices": []}
    if packages["torch"]:
        import torch

        from .devices import best_device

        device = best_device()
        if torch.cuda.is_available():
            cuda = {
                "available": True,
                "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
            }
    return {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "packages": packages,
        "device": device,
        "cuda": cuda,
        "families": families,
        "problems": problems,
    }


if __name__ == "__main__":
    print(json.dumps(report()))
