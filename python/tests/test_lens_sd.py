"""The SD lens against independent references: the stock diffusers pipeline, its clip_skip, itself
in other batches."""

from __future__ import annotations

import functools
import json
import re
import shutil

import numpy as np
import pytest
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)

from diffusion_lens.families import SamplerSettings, load_family
from diffusion_lens.families.sd import final_layer_norm
from diffusion_lens.generation import BadRequest, Cancelled, Item, LensOptions, OutOfMemory, generate

from .conftest import load_options, stock_settings_image

PROMPTS = ["a red apple", "two blue cubes on a table", "a portrait of an astronaut"]
SETTINGS = SamplerSettings(num_inference_steps=4, guidance_scale=7.5, height=32, width=32, scheduler=None)


def run_lens(family, prompts, items, settings=SETTINGS, **options):
    images: dict[int, np.ndarray] = {}
    done = generate(
        family,
        prompts,
        items,
        settings,
        LensOptions(**options),
        on_image=lambda index, item, stage, image, ms: images.__setitem__(index, image),
        on_progress=lambda progress: None,
    )
    assert done["images"] == len(items)
    return [images[i] for i in range(len(items))], done


def stock_image(
    pipe: StableDiffusionPipeline, prompt: str, seed: int, scheduler=None, **kwargs
) -> np.ndarray:
    original = pipe.scheduler
    if scheduler is not None:
        pipe.scheduler = scheduler.from_config(original.config)
    try:
        return stock_settings_image(pipe, prompt, seed, SETTINGS, **kwargs)
    finally:
        pipe.scheduler = original


def clip_skip_image(pipe: StableDiffusionPipeline, prompt: str, seed: int, clip_skip: int) -> np.ndarray:
    """The stock pipeline with `clip_skip`. diffusers' own clip_skip path reads
    `text_encoder.text_model`, which transformers >= 5.6 removed from CLIPTextModel (diffusers issue
    14124); there we build the embedding exactly as diffusers documents clip_skip
    (hidden_states[-(clip_skip + 1)] through the final layer norm) and pass it as prompt_embeds."""
    try:
        return stock_image(pipe, prompt, seed, clip_skip=clip_skip)
    except AttributeError as exc:
        assert "text_model" in str(exc)
    tokens = pipe.tokenizer(
        prompt,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        hidden = pipe.text_encoder(tokens.input_ids, output_hidden_states=True).hidden_states
        embeds = pipe.text_encoder.final_layer_norm(hidden[-(clip_skip + 1)])
    return stock_image(pipe, prompt, seed, prompt_embeds=embeds)


def test_final_layer_equals_stock_pipeline(sd_family, stock_sd):
    last = sd_family.num_layers
    for seed in (0, 7):
        (image,), _ = run_lens(sd_family, PROMPTS[:1], [Item(0, last, seed)])
        np.testing.assert_array_equal(image, stock_image(stock_sd, PROMPTS[0], seed))


@pytest.mark.parametrize(
    ("name", "scheduler_class"),
    [("euler-ancestral", EulerAncestralDiscreteScheduler), ("dpm-multistep", DPMSolverMultistepScheduler)],
)
def test_named_schedulers_equal_stock(sd_family, stock_sd, name, scheduler_class):
    settings = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": name})
    (image,), _ = run_lens(sd_family, PROMPTS[:1], [Item(0, sd_family.num_layers, 3)], settings)
    np.testing.assert_array_equal(image, stock_image(stock_sd, PROMPTS[0], 3, scheduler=scheduler_class))


def test_layer_l_equals_stock_clip_skip(sd_family, stock_sd):
    last = sd_family.num_layers
    layers = list(range(last))
    images, _ = run_lens(sd_family, PROMPTS[:1], [Item(0, layer, 1) for layer in layers], max_batch=1)
    for layer, image in zip(layers, images, strict=True):
        np.testing.assert_array_equal(image, clip_skip_image(stock_sd, PROMPTS[0], 1, clip_skip=last - layer))


def test_layers_differ(sd_family):
    images, _ = run_lens(
        sd_family, PROMPTS[:1], [Item(0, layer, 0) for layer in range(sd_family.num_layers + 1)]
    )
    for a in range(len(images)):
        for b in range(a + 1, len(images)):
            assert not np.array_equal(images[a], images[b]), (a, b)


def test_image_does_not_depend_on_its_batch(sd_family):
    target = Item(1, 2, 5)
    (alone,), _ = run_lens(sd_family, PROMPTS, [target], max_batch=1)
    crowd = [Item(0, 0, 0), Item(2, 5, 9), target, Item(1, 4, 5), Item(1, 2, 6), Item(0, 2, 5)]
    batched, done = run_lens(sd_family, PROMPTS, crowd, max_batch=8)
    assert done["max_batch_used"] == 8
    difference = np.abs(batched[2].astype(int) - alone.astype(int))
    assert difference.max() <= 2, difference.max()
    # and the other items are themselves: compare with their own solo runs
    for index in (0, 5):
        (solo,), _ = run_lens(sd_family, PROMPTS, [crowd[index]], max_batch=1)
        assert np.abs(batched[index].astype(int) - solo.astype(int)).max() <= 2


def test_uncond_same_layer_is_an_ablation(sd_family):
    last = sd_family.num_layers
    items = [Item(0, 1, 0), Item(0, last, 0)]
    final, _ = run_lens(sd_family, PROMPTS[:1], items)
    same, _ = run_lens(sd_family, PROMPTS[:1], items, uncond="same-layer")
    assert not np.array_equal(final[0], same[0])
    np.testing.assert_array_equal(final[1], same[1])  # at L both branches are the final layer anyway


def test_noise_per_layer_is_fresh_and_reproducible(sd_family):
    items = [Item(0, 3, 0)]
    shared, _ = run_lens(sd_family, PROMPTS[:1], items)
    fresh, _ = run_lens(sd_family, PROMPTS[:1], items, noise="per-layer")
    again, _ = run_lens(sd_family, PROMPTS[:1], items, noise="per-layer")
    assert not np.array_equal(shared[0], fresh[0])
    np.testing.assert_array_equal(fresh[0], again[0])


def test_negative_prompt_changes_the_unconditional_branch(sd_family, stock_sd):
    last = sd_family.num_layers
    (image,), _ = run_lens(sd_family, PROMPTS[:1], [Item(0, last, 2)], negative_prompt="blurry")
    np.testing.assert_array_equal(image, stock_image(stock_sd, PROMPTS[0], 2, negative_prompt="blurry"))


def test_out_of_memory_halves_the_batch(sd_family, monkeypatch):
    items = [Item(0, layer, seed) for layer in (1, 3, 5) for seed in (0, 1)]
    reference, _ = run_lens(sd_family, PROMPTS[:1], items, max_batch=1)
    real_sample = sd_family.sample
    batch_sizes = []

    def sample_with_small_memory(cond, *args, **kwargs):
        batch_sizes.append(cond.shape[0])
        if cond.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_sample(cond, *args, **kwargs)

    monkeypatch.setattr(sd_family, "sample", sample_with_small_memory)
    images, done = run_lens(sd_family, PROMPTS[:1], items, max_batch=8)
    assert done["max_batch_used"] == 2
    assert batch_sizes[:3] == [6, 4, 2]  # max_batch 8 → 4 → 2
    for got, want in zip(images, reference, strict=True):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2

    monkeypatch.setattr(
        sd_family, "sample", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("MPS backend out of memory"))
    )
    with pytest.raises(OutOfMemory):
        run_lens(sd_family, PROMPTS[:1], items, max_batch=4)


def test_cancel_stops_between_steps(sd_family):
    calls = []

    def is_cancelled():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        generate(
            sd_family,
            PROMPTS[:1],
            [Item(0, 1, 0), Item(0, 2, 0)],
            SETTINGS,
            LensOptions(max_batch=1),
            on_image=lambda *a: pytest.fail("no image after cancel"),
            on_progress=lambda p: None,
            is_cancelled=is_cancelled,
        )


def test_bad_requests_are_named(sd_family):
    with pytest.raises(BadRequest, match=r"items\[0\]\.layer = 6 is out of range 0\.\.5"):
        run_lens(sd_family, PROMPTS[:1], [Item(0, 6, 0)])
    with pytest.raises(BadRequest, match="prompt = 3"):
        run_lens(sd_family, PROMPTS, [Item(3, 0, 0)])
    with pytest.raises(BadRequest, match="'nope' is not a scheduler of the sd family; choose one of default"):
        run_lens(
            sd_family,
            PROMPTS[:1],
            [Item(0, 0, 0)],
            SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "nope"}),
        )


def test_final_norm_is_found_in_both_transformers_layouts(sd_family):
    from transformers import CLIPTextModelWithProjection

    flat = sd_family.pipe.text_encoder
    assert final_layer_norm(flat) is getattr(flat, "text_model", flat).final_layer_norm
    nested = CLIPTextModelWithProjection(flat.config)
    assert final_layer_norm(nested) is nested.text_model.final_layer_norm
    with pytest.raises(TypeError, match="final_layer_norm"):
        final_layer_norm(torch.nn.Linear(2, 2))


def test_guidance_out_of_range_is_a_bad_request(sd_family):
    """Library callers skip the protocol's checks; 1e308 or inf would make an all-black image."""
    for guidance, shown in ((1e308, "1e+308"), (float("inf"), "inf"), (float("nan"), "nan"), (-1.0, "-1.0")):
        settings = SamplerSettings(**{**SETTINGS.__dict__, "guidance_scale": guidance})
        with pytest.raises(BadRequest, match=rf"^guidance = {re.escape(shown)} is out of range 0\.\.100$"):
            run_lens(sd_family, PROMPTS[:1], [Item(0, 0, 0)], settings)


def test_done_reports_truncated_prompts(sd_family, stock_sd):
    """The fixture's byte-level CLIP tokenizer makes one token of a one-letter word; plus BOS and EOS."""
    long, fits, unused = "x " * 80, "x " * 75, "y " * 200
    prompts = [PROMPTS[0], long, fits, unused]
    settings = SamplerSettings(**{**SETTINGS.__dict__, "num_inference_steps": 1})
    _, done = run_lens(sd_family, prompts, [Item(i, 0, 0) for i in range(3)], settings)
    assert done["truncated"] == [{"prompt": 1, "tokens": 82, "max_tokens": 77}]
    # The count is the stock pipeline's own untruncated one (its "was truncated" warning) ...
    untruncated = stock_sd.tokenizer(long, padding="longest", return_tensors="pt").input_ids
    assert sd_family.token_count(long) == (untruncated.shape[-1], stock_sd.tokenizer.model_max_length)
    assert sd_family.token_count(fits) == (77, 77)
    # ... and the encoder does see the prompt cut to what fits.
    last = sd_family.num_layers
    assert torch.equal(sd_family.encode(long, [last])[last], sd_family.encode(fits, [last])[last])
    _, done = run_lens(sd_family, prompts[:1], [Item(0, 0, 0)], settings)
    assert done["truncated"] == []


def test_each_batch_is_one_stock_call_that_keeps_the_checkpoint_scheduler(sd_family, monkeypatch):
    """Sampling is StableDiffusionPipeline.__call__ itself: the batch's embeddings, one generator per item,
    progress and cancellation through callback_on_step_end. The scheduler a run names is the pipeline's
    for that call only, also when the run is cancelled."""
    calls = []
    stock_call = StableDiffusionPipeline.__call__

    @functools.wraps(stock_call)
    def spy(pipe, *args, **kwargs):
        calls.append(kwargs)
        return stock_call(pipe, *args, **kwargs)

    monkeypatch.setattr(StableDiffusionPipeline, "__call__", spy)
    checkpoint_scheduler = sd_family.pipe.scheduler
    settings = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler-ancestral"})
    run_lens(sd_family, PROMPTS[:2], [Item(0, 1, 0), Item(1, 2, 0), Item(0, 3, 4)], settings, max_batch=2)
    assert [call["prompt_embeds"].shape[0] for call in calls] == [2, 1]
    first = calls[0]
    assert first["negative_prompt_embeds"].shape == first["prompt_embeds"].shape
    assert len(first["generator"]) == 2 and first["generator"][0] is not first["generator"][1]
    assert (first["num_inference_steps"], first["guidance_scale"]) == (
        SETTINGS.num_inference_steps,
        SETTINGS.guidance_scale,
    )
    assert "prompt" not in first and callable(first["callback_on_step_end"])
    assert sd_family.pipe.scheduler is checkpoint_scheduler

    with pytest.raises(Cancelled):
        generate(
            sd_family, PROMPTS[:1], [Item(0, 1, 0)], settings, LensOptions(),
            on_image=lambda *a: pytest.fail("no image after cancel"),
            on_progress=lambda p: None,
            is_cancelled=lambda: len(calls) == 3,
        )  # fmt: skip
    assert sd_family.pipe.scheduler is checkpoint_scheduler
    assert sd_family.describe()["defaults"]["scheduler"] == "DDIMScheduler"


def test_conditioning_is_the_pipeline_arguments(sd_family):
    """A family's conditioning names the stock pipeline's arguments; encode is its prompt_embeds."""
    layers = [0, sd_family.num_layers]
    conditioning = sd_family.conditioning(PROMPTS[0], layers)
    encoded = sd_family.encode(PROMPTS[0], layers)
    for layer in layers:
        assert list(conditioning[layer]) == ["prompt_embeds"]
        assert torch.equal(conditioning[layer]["prompt_embeds"], encoded[layer])
        assert encoded[layer].shape == (1, sd_family.pipe.tokenizer.model_max_length, 40)


def test_a_zero_snr_checkpoint_keeps_its_schedule_or_refuses_the_scheduler(sd_dir, tmp_path):
    """A checkpoint trained with zero terminal SNR (rescale_betas_zero_snr, v-prediction) samples on that
    schedule with a named scheduler that keeps it, equal to the stock pipeline with that scheduler; a
    scheduler class that would drop the setting is refused by name instead of sampling another schedule."""
    zero_snr = tmp_path / "zero-snr"
    shutil.copytree(sd_dir, zero_snr)
    config_file = zero_snr / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.update(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    config_file.write_text(json.dumps(config))
    family = load_family(load_options(zero_snr), None)
    pndm = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "pndm"})
    with pytest.raises(
        BadRequest, match=r"^scheduler: 'pndm' cannot sample this checkpoint's zero-terminal-SNR"
    ):
        run_lens(family, PROMPTS[:1], [Item(0, 0, 0)], pndm)

    euler = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler"})
    (image,), _ = run_lens(family, PROMPTS[:1], [Item(0, family.num_layers, 0)], euler)
    stock = StableDiffusionPipeline.from_pretrained(zero_snr, safety_checker=None)
    stock.scheduler = EulerDiscreteScheduler.from_config(stock.scheduler.config)
    assert stock.scheduler.config.rescale_betas_zero_snr
    expected = stock_settings_image(stock, PROMPTS[0], 0, euler)
    assert np.abs(image.astype(int) - expected.astype(int)).max() <= 1
