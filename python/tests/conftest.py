from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusion_lens.families import CheckpointSource, LoadOptions, load_family
from diffusion_lens.fixtures import save_fixture

torch.set_num_threads(2)


@pytest.fixture
def empty_offline_hub(tmp_path, monkeypatch) -> Path:
    """HF_HUB_OFFLINE=1 and an empty HF_HOME. huggingface_hub reads both when it is imported, so its
    constants are patched too; in offline mode it refuses every request, so nothing reaches the network."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    return home


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sd", tmp_path_factory.mktemp("fixtures") / "tiny-sd")


def stock_pipeline(class_name: str, path: Path, **components: object):
    """The unmodified diffusers pipeline saved at ``path``, loaded independently of the project's loader."""
    import diffusers

    pipe = getattr(diffusers, class_name).from_pretrained(str(path), **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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
    return stock_pipeline("StableDiffusionPipeline", sd_dir, safety_checker=None)


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
    return stock_pipeline("IFPipeline", if_dir)


@pytest.fixture(scope="session")
def stock_if_sr(if_sr_dir: Path):
    return stock_pipeline("IFSuperResolutionPipeline", if_sr_dir, text_encoder=None)


@pytest.fixture(scope="session")
def pixart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("pixart", tmp_path_factory.mktemp("fixtures") / "tiny-pixart")


@pytest.fixture(scope="session")
def pixart_family(pixart_dir: Path):
    return load_family(load_options(pixart_dir), None)


@pytest.fixture(scope="session")
def stock_pixart(pixart_dir: Path):
    """The unmodified diffusers PixArt-alpha pipeline, loaded independently of the project's loader."""
    return stock_pipeline("PixArtAlphaPipeline", pixart_dir)


@pytest.fixture(scope="session")
def sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sdxl", tmp_path_factory.mktemp("fixtures") / "tiny-sdxl")


@pytest.fixture(scope="session")
def sdxl_family(sdxl_dir: Path):
    return load_family(load_options(sdxl_dir), None)


@pytest.fixture(scope="session")
def stock_sdxl(sdxl_dir: Path):
    """The unmodified diffusers SDXL pipeline, loaded independently of the project's loader."""
    return stock_pipeline("StableDiffusionXLPipeline", sdxl_dir)


@pytest.fixture(scope="session")
def flux_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("flux", tmp_path_factory.mktemp("fixtures") / "tiny-flux")


@pytest.fixture(scope="session")
def flux_family(flux_dir: Path):
    return load_family(load_options(flux_dir, family_options={"max_sequence_length": 32}), None)


@pytest.fixture(scope="session")
def stock_flux(flux_dir: Path):
    """The unmodified diffusers Flux pipeline, loaded independently of the project's loader."""
    return stock_pipeline("FluxPipeline", flux_dir)


def stock_settings_image(pipe, prompt: str | None, seed: int, settings, **kwargs):
    """The stock pipeline's image (uint8 HxWx3) for ``seed`` with ``settings`` (its family options passed
    as the pipeline's arguments); ``prompt`` is left out when ``kwargs`` give ``prompt_embeds``."""
    import numpy as np

    result = pipe(
        prompt if "prompt_embeds" not in kwargs else None,
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        height=settings.height,
        width=settings.width,
        generator=torch.Generator().manual_seed(seed),
        output_type="pil",
        **{**settings.family_options, **kwargs},
    )
    return np.asarray(result.images[0])


def check_batches_change_nothing(run_lens, family, prompts, layers, seeds=(0, 1)) -> None:
    """Every (prompt, layer, seed) of ``prompts`` x ``layers`` x ``seeds`` made in one batch gives its image
    made alone (within 1/255), and the first two layers give different images for the same seed."""
    import numpy as np

    from diffusion_lens.generation import Item

    items = [Item(p, layer, seed) for p in range(len(prompts)) for layer in layers for seed in seeds]
    one_by_one = run_lens(family, prompts, items, max_batch=1)
    batched = run_lens(family, prompts, items, max_batch=8)
    for single, together in zip(one_by_one, batched, strict=True):
        assert np.abs(single.astype(int) - together.astype(int)).max() <= 1
    assert not np.array_equal(one_by_one[0], one_by_one[len(seeds)])


def lens_images(family, prompts, items, settings, **options) -> list:
    """The images of a single-stage family's lens run, in item order (``options``: LensOptions fields)."""
    from diffusion_lens.generation import LensOptions, generate

    images: dict = {}
    generate(
        family,
        prompts,
        items,
        settings,
        LensOptions(**options),
        on_image=lambda index, item, stage, image, ms: images.__setitem__(index, image),
        on_progress=lambda progress: None,
    )
    return [images[i] for i in range(len(items))]


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sd3", tmp_path_factory.mktemp("fixtures") / "tiny-sd3")


@pytest.fixture(scope="session")
def sd3_family(sd3_dir: Path):
    return load_family(load_options(sd3_dir, family_options={"max_sequence_length": 32}), None)


@pytest.fixture(scope="session")
def stock_sd3(sd3_dir: Path):
    return stock_pipeline("StableDiffusion3Pipeline", sd3_dir)
