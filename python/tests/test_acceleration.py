"""The GPU set-up of a loaded pipeline (channels_last, SDPA, VAE slicing; run here on CPU tensors with the
device said to be CUDA, which is all it looks at), VAE tiling, and torch.compile on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

from diffusion_lens.families import SamplerSettings, load_family
from diffusion_lens.families.acceleration import (
    TILING_SIDE,
    Acceleration,
    VaeTiling,
    accelerate,
    attention_kind,
    tiling_wanted,
)
from diffusion_lens.fixtures import tiny_if_pipeline, tiny_if_sr_pipeline, tiny_sd_pipeline
from diffusion_lens.generation import Item, LensOptions, generate

from .conftest import load_options

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
SETTINGS = SamplerSettings(num_inference_steps=2, guidance_scale=7.5, height=32, width=32, scheduler=None)


def convolutions_in(module: torch.nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


def test_on_cuda_the_unet_and_vae_are_channels_last_and_the_vae_decodes_in_slices():
    pipe = tiny_sd_pipeline()
    done = accelerate([pipe], CUDA, compile=False, offload="none")
    assert done.notices == [] and done.compiled == []
    for module in (pipe.unet, pipe.vae):
        weights = convolutions_in(module)
        assert weights and all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
    assert pipe.vae.use_slicing and not pipe.vae.use_tiling


def test_the_cpu_is_left_as_loaded():
    pipe = tiny_sd_pipeline()
    assert accelerate([pipe], CPU, compile=False, offload="none") == Acceleration()
    assert all(w.is_contiguous() for w in convolutions_in(pipe.unet))
    assert not pipe.vae.use_slicing


def test_attention_runs_sdpa_and_classic_processors_are_swapped():
    assert attention_kind(AttnProcessor2_0()) == "sdpa"
    assert attention_kind(FluxAttnProcessor()) == "sdpa"  # dispatches to the native backend: SDPA
    flash = FluxAttnProcessor()
    flash._attention_backend = "flash"
    assert attention_kind(flash) == "FluxAttnProcessor (flash backend)"
    pipe = tiny_sd_pipeline()
    pipe.unet.set_attn_processor(AttnProcessor())
    assert accelerate([pipe], CUDA, compile=False, offload="none").notices == []
    assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}


def test_attention_that_is_not_sdpa_is_named_in_a_notice():
    class HandMade(AttnProcessor2_0):
        pass

    pipe = tiny_sd_pipeline()
    pipe.unet.set_attn_processor(HandMade())
    assert accelerate([pipe], CUDA, compile=False, offload="none").notices == [
        "attention: the unet runs HandMade, not PyTorch's SDPA"
    ]


def test_compile_wraps_every_stage_denoiser_unless_offloaded_model_by_model():
    stage1, stage2 = tiny_if_pipeline(), tiny_if_sr_pipeline()
    done = accelerate([stage1, stage2], CPU, compile=True, offload="none")
    assert done.compiled == ["unet", "stage 2 unet"] and done.notices == []
    assert stage1.unet._compiled_call_impl is not None and stage2.unet._compiled_call_impl is not None
    offloaded = tiny_sd_pipeline()
    done = accelerate([offloaded], CUDA, compile=True, offload="model")
    assert done.compiled == [] and "not compiled under offload: model" in done.notices[0]
    assert offloaded.unet._compiled_call_impl is None


def test_tiling_is_wanted_only_on_cuda_for_large_images_or_sizes_that_ran_out_of_memory():
    fresh = Acceleration()
    assert tiling_wanted(CUDA, TILING_SIDE, 512, fresh)
    assert not tiling_wanted(CUDA, 1024, 1024, fresh)
    assert not tiling_wanted(CPU, 4096, 4096, fresh)
    assert tiling_wanted(CUDA, 768, 768, Acceleration(tiled_sizes={(768, 768)}))


def test_a_single_image_decode_out_of_memory_retries_in_tiles_with_a_notice(sd_dir: Path):
    family = load_family(load_options(sd_dir), None)
    vae = family.pipe.vae
    untiled_decode = vae.decode

    def decode(*args, **kwargs):
        if not vae.use_tiling:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return untiled_decode(*args, **kwargs)

    vae.decode = decode
    images: dict[int, np.ndarray] = {}
    done = generate(
        family,
        ["a red apple"],
        [Item(0, 1, 0), Item(0, 2, 1)],
        SETTINGS,
        LensOptions(max_batch=2),
        on_image=lambda index, item, stage, image, ms: images.__setitem__(index, image),
        on_progress=lambda progress: None,
    )
    assert sorted(images) == [0, 1]
    assert done["max_batch_used"] == 1
    assert len(done["notices"]) == 1 and "decodes 32x32 images in tiles" in done["notices"][0]
    assert family.acceleration.tiled_sizes == {(32, 32)}
    assert not vae.use_tiling and vae.decode is decode  # untiled again, and its own decode kept


def test_compile_gives_the_same_images_and_reports_its_time(sd_dir: Path, sd_family):
    """torch.compile with inductor on the CPU (it needs a C++ compiler, which CI has): a few minutes the
    first time on two cores, seconds with inductor's cache."""
    compiled = load_family(load_options(sd_dir, compile=True), None)
    assert compiled.acceleration.compiled == ["unet"]
    items = [Item(0, 2, 0), Item(1, 5, 3)]

    def run(family) -> tuple[dict, list[np.ndarray]]:
        images: dict[int, np.ndarray] = {}
        done = generate(
            family,
            ["a red apple", "two blue cubes"],
            items,
            SETTINGS,
            LensOptions(max_batch=2),
            on_image=lambda index, item, stage, image, ms: images.__setitem__(index, image),
            on_progress=lambda progress: None,
        )
        return done, [images[i] for i in range(len(items))]

    first, got = run(compiled)
    _, want = run(sd_family)
    assert first["timings"]["compile_ms"] > 0
    assert sum(v for k, v in first["timings"].items() if k != "png_ms") <= first["elapsed_ms"]
    for a, b in zip(got, want, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 2
    second, again = run(compiled)  # the same shapes: nothing compiles
    assert second["timings"]["compile_ms"] == pytest.approx(0, abs=1e-6)
    for a, b in zip(again, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_loaded_reply_carries_the_set_up_notices(sd_dir: Path, monkeypatch):
    import diffusion_lens.families as families

    from .test_timings import Recorder, load_request

    seen = []

    def accelerate_noting(pipelines, device, compile, offload):
        seen.append((len(pipelines), device.type, compile, offload))
        return Acceleration(notices=["attention: the unet runs Something, not PyTorch's SDPA"])

    monkeypatch.setattr(families, "accelerate", accelerate_noting)
    loaded = Recorder().handle({**load_request(sd_dir), "compile": True})[-1]
    assert loaded["type"] == "loaded"
    assert loaded["notices"] == ["attention: the unet runs Something, not PyTorch's SDPA"]
    assert seen == [(1, "cpu", True, "none")]


def test_tiling_is_undone_after_the_request_and_a_vae_tiled_by_its_owner_is_left_alone():
    pipe = tiny_sd_pipeline()
    with VaeTiling([pipe], wanted=True) as tiling:
        assert tiling.on and pipe.vae.use_tiling and not tiling.available
    assert not pipe.vae.use_tiling
    owned = tiny_sd_pipeline()
    owned.vae.enable_tiling()
    with VaeTiling([owned], wanted=False) as tiling:
        assert not tiling.on and not tiling.available  # nothing to retry with
    assert owned.vae.use_tiling
