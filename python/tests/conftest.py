from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_lens.families import CheckpointSource, LoadOptions, load_family
from diffusion_lens.fixtures import save_fixture

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sd", tmp_path_factory.mktemp("fixtures") / "tiny-sd")


def load_options(path: Path | str, **overrides: object) -> LoadOptions:
    fields = {
        "model": str(path),
        "revision": None,
        "device": "cpu",
        "dtype": torch.float32,
        "offload": "none",
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


@pytest.fixture(scope="session")
def if_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("if", tmp_path_factory.mktemp("fixtures") / "tiny-if")


@pytest.fixture(scope="session")
def if_sr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("if-sr", tmp_path_factory.mktemp("fixtures") / "tiny-if-sr")


@pytest.fixture(scope="session")
def if_family(if_dir: Path, if_sr_dir: Path):
    """The IF family with both stages, loaded by path like a real checkpoint."""
    return load_family(load_options(if_dir, stage2=CheckpointSource(str(if_sr_dir), None)), None)


@pytest.fixture(scope="session")
def stock_if(if_dir: Path):
    """The unmodified diffusers IF stage I, loaded independently of the project's loader."""
    from diffusers import IFPipeline

    pipe = IFPipeline.from_pretrained(str(if_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def stock_if_sr(if_sr_dir: Path):
    from diffusers import IFSuperResolutionPipeline

    pipe = IFSuperResolutionPipeline.from_pretrained(str(if_sr_dir), text_encoder=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("pixart", tmp_path_factory.mktemp("fixtures") / "tiny-pixart")


@pytest.fixture(scope="session")
def pixart_family(pixart_dir: Path):
    return load_family(load_options(pixart_dir), None)


@pytest.fixture(scope="session")
def stock_pixart(pixart_dir: Path):
    """The unmodified diffusers PixArt-alpha pipeline, loaded independently of the project's loader."""
    from diffusers import PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline.from_pretrained(str(pixart_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sdxl", tmp_path_factory.mktemp("fixtures") / "tiny-sdxl")


@pytest.fixture(scope="session")
def sdxl_family(sdxl_dir: Path):
    return load_family(load_options(sdxl_dir), None)


@pytest.fixture(scope="session")
def stock_sdxl(sdxl_dir: Path):
    """The unmodified diffusers SDXL pipeline, loaded independently of the project's loader."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(str(sdxl_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("flux", tmp_path_factory.mktemp("fixtures") / "tiny-flux")


@pytest.fixture(scope="session")
def flux_family(flux_dir: Path):
    return load_family(load_options(flux_dir, family_options={"max_sequence_length": 32}), None)


@pytest.fixture(scope="session")
def stock_flux(flux_dir: Path):
    """The unmodified diffusers Flux pipeline, loaded independently of the project's loader."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(str(flux_dir))
    pipe.set_progress_bar_config(disable=True)
    return pipe
