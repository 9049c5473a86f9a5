"""Loading checkpoints by path: family detection, refusals, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from diffusion_lens.families import CheckpointError, detect_family, load_family
from diffusion_lens.fixtures import tiny_sd_pipeline

from .conftest import load_options


def test_family_is_detected_from_model_index(sd_dir):
    assert detect_family(str(sd_dir)) == "sd"
    family = load_family(load_options(sd_dir), None)
    info = family.describe()
    assert family.num_layers == 5
    assert info["defaults"]["height"] == 32 and info["defaults"]["scheduler"] == "DDIMScheduler"
    assert info["revision"] is None


def test_unsupported_pipeline_names_the_supported_ones(sd_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(sd_dir, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "KandinskyPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        ValueError, match=r"'KandinskyPipeline' is not supported; supported: StableDiffusionPipeline"
    ):
        load_family(load_options(other), None)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="model folder not found"):
        load_family(load_options(tmp_path / "nope"), None)


def test_pickled_weights_are_refused_unless_allowed(tmp_path):
    pickled = Path(tmp_path / "pickled")
    tiny_sd_pipeline().save_pretrained(pickled, safe_serialization=False)
    with pytest.raises(Exception, match="safetensors"):
        load_family(load_options(pickled), None)
    family = load_family(load_options(pickled, allow_pickle=True), None)
    assert family.num_layers == 5


def test_a_weight_variant_loads_the_variant_files(tmp_path):
    """`variant: fp16` reads the *.fp16.safetensors copies the hub checkpoints ship (half the download)."""
    folder = tmp_path / "variant"
    pipe = tiny_sd_pipeline()
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True, variant="fp16")
    assert list(folder.glob("unet/*.fp16.safetensors"))
    family = load_family(load_options(folder, variant="fp16"), None)
    weight = family.pipe.unet.conv_in.weight  # type: ignore[attr-defined]
    assert torch.equal(weight, pipe.unet.conv_in.weight.to(torch.float32))
    with pytest.raises(Exception, match="bf16"):
        load_family(load_options(folder, variant="bf16"), None)
