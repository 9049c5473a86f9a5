from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_lens.families import LoadOptions, load_family
from diffusion_lens.fixtures import save_fixture

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sd", tmp_path_factory.mktemp("fixtures") / "tiny-sd")


def load_options(path: Path, **overrides: object) -> LoadOptions:
    fields = {
        "model": str(path),
        "revision": None,
        "device": "cpu",
        "dtype": torch.float32,
        "offload": False,
        "allow_pickle": False,
    }
    fields.update(overrides)
    return LoadOptions(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sd_family(sd_dir: Path):
    return load_family(load_options(sd_dir), None)


@pytest.fixture(scope="session")
def stock_sd(sd_dir: Path):
    """The unmodified diffusers pipeline, loaded independently of the project's loader."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe
