"""The DeepFloyd IF lens against independent references: the stock IFPipeline and
IFSuperResolutionPipeline, a T5 cut after block l, itself in other batches."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, IFPipeline, IFSuperResolutionPipeline

from diffusion_lens.families import (
    CheckpointError,
    CheckpointSource,
    SamplerSettings,
    Stage2Settings,
    captions,
    detect_family,
    load_family,
)
from diffusion_lens.generation import BadRequest, Item, LensOptions, generate
from diffusion_lens.images import to_uint8

from .conftest import load_options

PROMPTS = ["a red apple", "Two blue cubes on a table <b>http://example.com</b>"]
STAGE2 = Stage2Settings(
    num_inference_steps=3,
    guidance_scale=4.0,
    height=32,
    width=32,
    scheduler=None,
    seed=None,
    family_options={"noise_level": 250},
)
SETTINGS = SamplerSettings(
    num_inference_steps=3, guidance_scale=7.0, height=16, width=16, scheduler=None, stage2=STAGE2
)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> dict[int, list[np.ndarray]]:
    """Images per stage, in item order."""
    images: dict[tuple[int, int], np.ndarray] = {}
    done = generate(
        family,
        prompts,
        items,
        settings,
        LensOptions(**options),
        on_image=lambda index, item, stage, image, ms: images.__setitem__((stage, index), image),
        on_progress=lambda progress: None,
    )
    assert done["images"] == len(items)
    stages = sorted({stage for stage, _ in images})
    return {stage: [images[(stage, i)] for i in range(len(items))] for stage in stages}


def truncated(pipe: IFPipeline, blocks: int) -> IFPipeline:
    """The stock pipeline with a T5 cut after ``blocks`` blocks: its output is the encoder's final norm
    of hidden state ``blocks``, which is what the lens must give for that layer."""
    encoder = copy.deepcopy(pipe.text_encoder)
    encoder.encoder.block = encoder.encoder.block[:blocks]
    cut = IFPipeline(**{**pipe.components, "text_encoder": encoder}, requires_safety_checker=False)
    cut.set_progress_bar_config(disable=True)
    return cut


def stock_images(
    stage1: IFPipeline,
    stage2: IFSuperResolutionPipeline,
    prompt: str,
    seed: int,
    negative: str | None = None,
    settings: SamplerSettings = SETTINGS,
    scheduler=None,
    layer_encoder: IFPipeline | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two stock pipelines used as diffusers documents it: one generator through both stages (unless
    stage II has a seed of its own), stage I's `pt` output and prompt embeddings fed to stage II.
    ``layer_encoder`` (a truncated copy of ``stage1``) makes the conditional embedding; the
    unconditional one always comes from the whole encoder."""
    assert settings.stage2 is not None
    original = stage1.scheduler
    if scheduler is not None:
        stage1.scheduler = scheduler.from_config(original.config)
    try:
        generator = torch.Generator().manual_seed(seed)
        embeds, negative_embeds = stage1.encode_prompt(
            prompt, do_classifier_free_guidance=True, negative_prompt=negative, clean_caption=True
        )
        if layer_encoder is not None:
            embeds, _ = layer_encoder.encode_prompt(
                prompt, do_classifier_free_guidance=False, clean_caption=True
            )
        # The prompt itself where possible: the stock pipeline's own encoding is then what is compared.
        text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}
        if layer_encoder is None:
            text = {"prompt": prompt, "negative_prompt": negative}
        low = stage1(
            **text,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            height=settings.height,
            width=settings.width,
            generator=generator,
            output_type="pt",
        ).images
        if settings.stage2.seed is not None:
            generator = torch.Generator().manual_seed(settings.stage2.seed)
        high = stage2(
            image=low,
            prompt_embeds=embeds,
            negative_prompt_embeds=negative_embeds,
            num_inference_steps=settings.stage2.num_inference_steps,
            guidance_scale=settings.stage2.guidance_scale,
            noise_level=settings.stage2.family_options.get("noise_level", 250),
            height=settings.stage2.height,
            width=settings.stage2.width,
            generator=generator,
            output_type="pt",
        ).images
    finally:
        stage1.scheduler = original
    return to_uint8(low)[0], to_uint8(high)[0]


def test_detects_and_loads_both_stages(if_dir: Path, if_family):
    assert detect_family(str(if_dir)) == "if"
    assert if_family.num_layers == 4
    assert if_family.stage2.text_encoder is None  # stage II is conditioned on stage I's embeddings
    described = if_family.describe()
    assert described["pipeline_class"] == "IFPipeline"
    assert described["defaults"] == {
        "steps": 100,
        "guidance": 7.0,
        "height": 16,
        "width": 16,
        "scheduler": "DDPMScheduler",
    }
    assert described["stage2"]["pipeline_class"] == "IFSuperResolutionPipeline"
    assert described["stage2"]["defaults"] == {
        "steps": 50,
        "guidance": 4.0,
        "height": 32,
        "width": 32,
        "scheduler": "DDPMScheduler",
    }
    assert described["family_options"] == {"clean_caption": True} and described["notices"] == []


@pytest.mark.parametrize("negative", [None, "blurry"])
def test_final_layer_is_the_stock_two_stage_pipeline(if_family, stock_if, stock_if_sr, negative):
    items = [Item(p, if_family.num_layers, seed) for p in range(len(PROMPTS)) for seed in (0, 7)]
    # One item per batch: batched convolutions may round differently from the stock batch of one (the
    # batch test below bounds that difference).
    images = run_lens(if_family, PROMPTS, items, negative_prompt=negative or "", max_batch=1)
    for index, item in enumerate(items):
        low, high = stock_images(stock_if, stock_if_sr, PROMPTS[item.prompt], item.seed, negative)
        assert np.array_equal(images[1][index], low), item
        assert np.array_equal(images[2][index], high), item
        assert images[1][index].shape == (16, 16, 3) and images[2][index].shape == (32, 32, 3)


def test_final_layer_is_stock_with_dpm_solver_and_a_fixed_stage2_seed(if_family, stock_if, stock_if_sr):
    settings = SamplerSettings(
        num_inference_steps=4,
        guidance_scale=7.0,
        height=16,
        width=16,
        scheduler="dpm-multistep",
        stage2=Stage2Settings(**{**STAGE2.__dict__, "seed": 99}),
    )
    images = run_lens(if_family, PROMPTS[:1], [Item(0, 4, 3)], settings)
    low, high = stock_images(
        stock_if, stock_if_sr, PROMPTS[0], 3, settings=settings, scheduler=DPMSolverMultistepScheduler
    )
    assert np.array_equal(images[1][0], low)
    assert np.array_equal(images[2][0], high)


def test_t5_norm_applies_to_every_layer_but_the_last(if_family, stock_if):
    """hidden_states[l] through the final norm is what a T5 cut after block l outputs; the last hidden
    state is already normed (the fixture's norm weights are not ones, so a second norm would show)."""
    prompt = PROMPTS[1]
    layers = list(range(if_family.num_layers + 1))
    lens = if_family.encode(prompt, layers)
    for layer in layers:
        expected, _ = truncated(stock_if, layer).encode_prompt(
            prompt, do_classifier_free_guidance=False, clean_caption=True
        )
        assert torch.equal(lens[layer], expected), layer
    renormed = if_family.norm(lens[if_family.num_layers])
    assert not torch.allclose(renormed, lens[if_family.num_layers], atol=1e-3)


def test_stage2_gets_the_same_layer(if_family, stock_if, stock_if_sr):
    """Layer l through both stages equals the stock pipelines fed a T5 cut after block l."""
    layer, seed = 2, 5
    images = run_lens(if_family, PROMPTS[:1], [Item(0, layer, seed)])
    low, high = stock_images(
        stock_if, stock_if_sr, PROMPTS[0], seed, layer_encoder=truncated(stock_if, layer)
    )
    assert np.array_equal(images[1][0], low)
    assert np.array_equal(images[2][0], high)


def test_images_do_not_depend_on_the_batch(if_family):
    items = [Item(p, layer, seed) for p in range(2) for layer in (0, 2, 4) for seed in (0, 1)]
    batched = run_lens(if_family, PROMPTS, items, max_batch=5)
    alone = run_lens(if_family, PROMPTS, items, max_batch=1)
    for stage in (1, 2):
        for a, b in zip(batched[stage], alone[stage], strict=True):
            assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_progress_counts_both_stages(if_family):
    seen = []
    generate(
        if_family,
        PROMPTS[:1],
        [Item(0, 1, 0), Item(0, 2, 0)],
        SETTINGS,
        LensOptions(max_batch=1),
        on_image=lambda *a: None,
        on_progress=lambda p: seen.append((p.done_units, p.total_units)),
    )
    total = 2 * (SETTINGS.num_inference_steps + STAGE2.num_inference_steps)
    assert all(t == total for _, t in seen) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_stage2_requests_are_checked(if_dir: Path, if_family):
    too_noisy = SamplerSettings(
        **{
            **SETTINGS.__dict__,
            "stage2": Stage2Settings(**{**STAGE2.__dict__, "family_options": {"noise_level": 1000}}),
        }
    )
    with pytest.raises(BadRequest, match=r"noise_level = 1000 is out of range 0\.\.999"):
        run_lens(if_family, PROMPTS[:1], [Item(0, 0, 0)], too_noisy)
    stage1_only = load_family(load_options(if_dir), "if")
    with pytest.raises(BadRequest, match="no stage II model is loaded"):
        run_lens(stage1_only, PROMPTS[:1], [Item(0, 0, 0)])
    images = run_lens(
        stage1_only, PROMPTS[:1], [Item(0, 0, 0)], SamplerSettings(**{**SETTINGS.__dict__, "stage2": None})
    )
    assert list(images) == [1]


def test_loading_errors_name_the_problem(sd_dir: Path, if_dir: Path, if_sr_dir: Path):
    with pytest.raises(
        ValueError, match=r"IFSuperResolutionPipeline.*stage II.*stage2\.model.*IFPipeline \(if\)"
    ):
        load_family(load_options(if_sr_dir), None)
    with pytest.raises(ValueError, match="pipeline class 'IFPipeline' is not IFSuperResolutionPipeline"):
        load_family(load_options(if_dir, stage2=CheckpointSource(str(if_dir), None)), None)
    with pytest.raises(ValueError, match="the sd family has no stage II"):
        load_family(load_options(sd_dir, stage2=CheckpointSource(str(if_sr_dir), None)), None)
    with pytest.raises(ValueError, match=r"family_options\.clean_caption: the sd family has no such option"):
        load_family(load_options(sd_dir, family_options={"clean_caption": True}), None)
    with pytest.raises(ValueError, match=r"field 'family_options\.clean_caption' must be a boolean or null"):
        load_family(load_options(if_dir, family_options={"clean_caption": "yes"}), None)
    with pytest.raises(CheckpointError, match=r"tiny-if is a IFPipeline checkpoint \(family if\), not sd"):
        load_family(load_options(if_dir), "sd")
    with pytest.raises(CheckpointError, match=r"stage II model folder not found: \./nowhere"):
        load_family(load_options(if_dir, stage2=CheckpointSource("./nowhere", None)), None)


def test_caption_cleaning_as_the_stock_pipeline(if_dir: Path, if_family, stock_if):
    prompt = PROMPTS[1]
    cleaned, _ = stock_if.encode_prompt(prompt, do_classifier_free_guidance=False, clean_caption=True)
    plain, _ = stock_if.encode_prompt(prompt, do_classifier_free_guidance=False, clean_caption=False)
    assert not torch.equal(cleaned, plain)  # the prompt has markup to clean
    assert torch.equal(if_family.encode(prompt, [4])[4], cleaned)
    uncleaned = load_family(load_options(if_dir, family_options={"clean_caption": False}), None)
    assert torch.equal(uncleaned.encode(prompt, [4])[4], plain)
    assert (
        uncleaned.describe()["family_options"] == {"clean_caption": False}
        and uncleaned.describe()["notices"] == []
    )


def test_caption_cleaning_off_without_its_packages_says_so(if_dir: Path, stock_if, monkeypatch):
    monkeypatch.setattr(captions, "is_ftfy_available", lambda: False)
    with pytest.raises(ValueError, match="clean_caption is on but ftfy not installed"):
        load_family(load_options(if_dir, family_options={"clean_caption": True}), None)
    family = load_family(load_options(if_dir), None)
    described = family.describe()
    assert described["family_options"] == {"clean_caption": False}
    assert "caption cleaning is off: ftfy not installed" in described["notices"][0]
    plain, _ = stock_if.encode_prompt(PROMPTS[1], do_classifier_free_guidance=False, clean_caption=False)
    assert torch.equal(family.encode(PROMPTS[1], [4])[4], plain)


def test_done_reports_truncated_prompts(if_family, stock_if):
    """Counted as the encoder sees the prompt: after caption cleaning, with </s>; 77 tokens at most."""
    long = "A RED apple " * 40  # cleaned and lower-cased: 120 one-token words, then </s>
    fits = " ".join(["red"] * 76)
    prompts = [PROMPTS[1], long, fits]
    settings = SamplerSettings(**{**SETTINGS.__dict__, "num_inference_steps": 1, "stage2": None})
    done = generate(
        if_family, prompts, [Item(i, 0, 0) for i in range(3)], settings, LensOptions(),
        on_image=lambda *a: None, on_progress=lambda p: None,
    )  # fmt: skip
    # The stock pipeline's own untruncated count (its "was truncated" warning).
    text = stock_if._text_preprocessing(long, clean_caption=True)
    untruncated = stock_if.tokenizer(text, padding="longest", return_tensors="pt").input_ids.shape[-1]
    assert untruncated == 121
    assert done["truncated"] == [{"prompt": 1, "tokens": untruncated, "max_tokens": 77}]
    assert if_family.token_count(fits) == (77, 77)
    # The encoder sees the first 76 tokens and </s>.
    cut = " ".join(["a red apple"] * 25 + ["a"])
    assert if_family.token_count(cut) == (77, 77)
    assert torch.equal(if_family.encode(long, [4])[4], if_family.encode(cut, [4])[4])


def test_both_stages_are_the_stock_calls(if_family, monkeypatch):
    """Stage I is IFPipeline.__call__ on the lens's embeddings (no prompt, so nothing is cleaned again);
    stage II is IFSuperResolutionPipeline.__call__ on stage I's raw images, the same embeddings and the
    same generators, which go on from where stage I left them."""
    calls: list[tuple[str, dict]] = []
    for pipeline in (IFPipeline, IFSuperResolutionPipeline):
        stock_call = pipeline.__call__

        def spy(pipe, *args, _stock=stock_call, **kwargs):
            calls.append((type(pipe).__name__, kwargs))
            output = _stock(pipe, *args, **kwargs)
            kwargs["returned"] = output[0]
            return output

        monkeypatch.setattr(pipeline, "__call__", functools.wraps(stock_call)(spy))
    run_lens(if_family, PROMPTS, [Item(0, 1, 0), Item(1, 3, 2)], max_batch=2)
    (first, stage1), (second, stage2) = calls
    assert (first, second) == ("IFPipeline", "IFSuperResolutionPipeline")
    assert "prompt" not in stage1 and "prompt" not in stage2
    assert stage1["output_type"] == "pt" and stage2["image"] is stage1["returned"]
    assert stage2["noise_level"] == STAGE2.family_options["noise_level"]
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        assert stage2[name] is stage1[name] and stage1[name].shape[0] == 2
    assert stage2["generator"] is stage1["generator"] and len(stage1["generator"]) == 2
    assert stage1["callback_steps"] == 1 and callable(stage2["callback"])


def test_schedulers_that_cannot_run_if_are_refused(if_family):
    """IF's UNets predict a learned variance, which only some schedulers handle; the family says which,
    and the others are refused by name before anything runs (they would fail in the middle)."""
    assert set(if_family.schedulers) == {"default", "dpm-multistep", "dpm-singlestep", "ddpm"}
    euler = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler"})
    with pytest.raises(BadRequest, match="scheduler: 'euler' is not a scheduler of the if family"):
        run_lens(if_family, PROMPTS[:1], [Item(0, 0, 0)], euler)
    stage2 = Stage2Settings(**{**STAGE2.__dict__, "scheduler": "unipc"})
    with pytest.raises(BadRequest, match=r"stage2\.scheduler: 'unipc' is not a scheduler of the if family"):
        run_lens(
            if_family,
            PROMPTS[:1],
            [Item(0, 0, 0)],
            SamplerSettings(**{**SETTINGS.__dict__, "stage2": stage2}),
        )
    ddpm = Stage2Settings(**{**STAGE2.__dict__, "scheduler": "ddpm"})
    images = run_lens(
        if_family, PROMPTS[:1], [Item(0, 0, 0)], SamplerSettings(**{**SETTINGS.__dict__, "stage2": ddpm})
    )
    assert images[2][0].shape == (32, 32, 3)
