"""The lens on Sana: the last layer is the stock pipeline (with its complex human instruction); layer l is the
stock pipeline fed a Gemma cut after layer l (its output then is hidden state l through the final norm),
with the mask and the stock selection of positions; the unconditional branch as stock; batches change
nothing; what transformers' Gemma returns as hidden states is what the lens assumes."""

from __future__ import annotations

import copy
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import SanaPipeline, UniPCMultistepScheduler

from diffusion_lens.families import CheckpointError, SamplerSettings, detect_family, load_family
from diffusion_lens.fixtures import save_fixture
from diffusion_lens.generation import BadRequest, Item, truncations

from .conftest import (
    check_batches_change_nothing,
    lens_images,
    load_options,
    stock_pipeline,
    stock_settings_image,
)

PROMPTS = ["a red apple", "Two blue cubes on a table <b>http://example.com</b>"]
# The stock __call__'s own instruction, read here independently of the family.
STOCK_INSTRUCTION = inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default
# Small images without binning, for speed (Sana wants sides divisible by 32); one test runs the stock
# default (binning to the 512 px table of the fixture's transformer).
UNBINNED = {"use_resolution_binning": False}
SETTINGS = SamplerSettings(
    num_inference_steps=3, guidance_scale=4.5, height=64, width=64, scheduler=None, family_options=UNBINNED
)


@pytest.fixture(scope="module")
def sana_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_fixture("sana", tmp_path_factory.mktemp("fixtures") / "tiny-sana")


@pytest.fixture(scope="module")
def sana_family(sana_dir: Path):
    return load_family(load_options(sana_dir), None)


@pytest.fixture(scope="module")
def stock_sana(sana_dir: Path) -> SanaPipeline:
    """The unmodified diffusers Sana pipeline, loaded independently of the project's loader."""
    return stock_pipeline("SanaPipeline", sana_dir)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> list[np.ndarray]:
    return lens_images(family, prompts, items, settings, **options)


def stock_image(pipe, prompt, seed: int, settings: SamplerSettings = SETTINGS, **kwargs) -> np.ndarray:
    return stock_settings_image(pipe, prompt, seed, settings, **kwargs)


def cut_encoder(pipe: SanaPipeline, layers: int) -> torch.nn.Module:
    """Gemma with only its first ``layers`` decoder layers: its output is the final norm of hidden state
    ``layers``, which is what the lens must give for that layer."""
    encoder = copy.deepcopy(pipe.text_encoder)
    encoder.layers = encoder.layers[:layers]
    encoder.config.num_hidden_layers = layers
    return encoder


def cut_pipeline(pipe: SanaPipeline, layers: int) -> SanaPipeline:
    cut = SanaPipeline(**{**pipe.components, "text_encoder": cut_encoder(pipe, layers)})
    cut.set_progress_bar_config(disable=True)
    return cut


def test_detects_and_describes_the_family(sana_dir: Path, sana_family):
    assert detect_family(str(sana_dir)) == "sana"
    assert sana_family.num_layers == 3 and sana_family.stock_layer == 3
    described = sana_family.describe()
    assert described["pipeline_class"] == "SanaPipeline"
    # The stock __call__'s steps and guidance; the native size: sample_size 16 x the DC-AE's factor 32.
    assert described["defaults"] == {
        "steps": 20,
        "guidance": 4.5,
        "height": 512,
        "width": 512,
        "scheduler": "DPMSolverMultistepScheduler",
    }
    assert described["family_options"] == {
        "clean_caption": False,
        "max_sequence_length": 300,
        "complex_human_instruction": list(STOCK_INSTRUCTION),
    }
    (encoder,) = described["encoders"]
    assert encoder["class_name"] == "Gemma2Model" and encoder["layers"] == 3 and encoder["norm"] == "norm"
    assert encoder["indices"] == [0, 1, 2, 3] and encoder["stock_index"] == 3 and not encoder["pooled"]
    capabilities = described["capabilities"]
    assert capabilities["schedulers"] == ["default", "dpm-multistep", "dpm-singlestep", "unipc"]
    assert capabilities["guidance"] == "cfg"
    assert "instruction" in described["lens"]["tokenization"] and "norm" in described["lens"]["norm"]


def test_gemma_hidden_states_are_what_the_lens_assumes(stock_sana):
    """transformers 5.24's Gemma2Model: hidden_states has L + 1 entries; 0 is the token embeddings times
    sqrt(hidden_size); i < L is decoder layer i's output before the final norm (the norm of it is the
    output of Gemma cut after layer i); L is the normed output itself, the last_hidden_state."""
    encoder = stock_sana.text_encoder
    tokens = stock_sana.tokenizer(["a red apple"], padding="max_length", max_length=12, return_tensors="pt")
    depth = encoder.config.num_hidden_layers
    captured = {}
    hook = encoder.layers[-1].register_forward_hook(lambda module, args, out: captured.setdefault("raw", out))
    try:
        with torch.no_grad():
            output = encoder(
                tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True
            )
    finally:
        hook.remove()
    hidden = output.hidden_states
    assert len(hidden) == depth + 1
    scale = torch.tensor(encoder.config.hidden_size**0.5)
    torch.testing.assert_close(
        hidden[0], encoder.embed_tokens.weight[tokens.input_ids] * scale, rtol=0, atol=0
    )
    raw = captured["raw"][0] if isinstance(captured["raw"], tuple) else captured["raw"]
    assert torch.equal(hidden[depth], output.last_hidden_state)
    assert torch.equal(hidden[depth], encoder.norm(raw)) and not torch.allclose(hidden[depth], raw)
    # The fixture's norm is no identity, so a second norm would show.
    assert not torch.allclose(encoder.norm(hidden[depth]), hidden[depth])
    for layer in range(depth):
        with torch.no_grad():
            cut = cut_encoder(stock_sana, layer)(tokens.input_ids, attention_mask=tokens.attention_mask)
            assert torch.equal(cut.last_hidden_state, encoder.norm(hidden[layer]))


def test_final_layer_is_the_stock_pipeline(sana_family, stock_sana):
    """The stock default options: the complex human instruction, 300 positions, no caption cleaning."""
    last = sana_family.num_layers
    for prompt in PROMPTS:
        for seed in (0, 5):
            (image,) = run_lens(sana_family, [prompt], [Item(0, last, seed)])
            np.testing.assert_array_equal(image, stock_image(stock_sana, prompt, seed))


def test_stock_defaults_with_resolution_binning_and_a_negative_prompt(sana_family, stock_sana):
    """Binned to the nearest trained aspect ratio of the 512 px table (256x512 asks for a bin) and resized
    back, with a negative prompt (encoded without the instruction, as stock)."""
    binned = SamplerSettings(
        num_inference_steps=2, guidance_scale=4.5, height=256, width=512, scheduler=None, family_options={}
    )
    last = sana_family.num_layers
    (image,) = run_lens(sana_family, PROMPTS[:1], [Item(0, last, 3)], binned, negative_prompt="blurry")
    assert image.shape == (256, 512, 3)
    expected = stock_image(stock_sana, PROMPTS[0], 3, binned, negative_prompt="blurry")
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_each_layer_is_the_stock_pipeline_with_a_cut_encoder(sana_family, stock_sana, layer):
    """Built independently: the stock pipeline encodes the prompt (with its instruction and selection) with
    Gemma cut after ``layer`` layers, the unconditional branch with the whole Gemma."""
    cut = cut_pipeline(stock_sana, layer)
    embeds, mask, _, _ = cut.encode_prompt(
        PROMPTS[1], do_classifier_free_guidance=False, complex_human_instruction=STOCK_INSTRUCTION
    )
    _, _, negative, negative_mask = stock_sana.encode_prompt(
        PROMPTS[1], do_classifier_free_guidance=True, complex_human_instruction=STOCK_INSTRUCTION
    )
    expected = stock_image(
        stock_sana,
        None,
        2,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt=None,
        negative_prompt_embeds=negative,
        negative_prompt_attention_mask=negative_mask,
    )
    (image,) = run_lens(sana_family, PROMPTS[1:], [Item(0, layer, 2)])
    np.testing.assert_array_equal(image, expected)


def test_same_layer_unconditional_is_the_negative_prompt_through_the_cut_encoder(sana_family, stock_sana):
    cut = cut_pipeline(stock_sana, 1)
    embeds, mask, negative, negative_mask = cut.encode_prompt(
        PROMPTS[0],
        do_classifier_free_guidance=True,
        negative_prompt="blurry",
        complex_human_instruction=STOCK_INSTRUCTION,
    )
    expected = stock_image(
        stock_sana,
        None,
        4,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt=None,
        negative_prompt_embeds=negative,
        negative_prompt_attention_mask=negative_mask,
    )
    (image,) = run_lens(
        sana_family, PROMPTS[:1], [Item(0, 1, 4)], negative_prompt="blurry", uncond="same-layer"
    )
    np.testing.assert_array_equal(image, expected)
    (final_uncond,) = run_lens(sana_family, PROMPTS[:1], [Item(0, 1, 4)], negative_prompt="blurry")
    assert not np.array_equal(image, final_uncond)


@pytest.mark.parametrize(
    "options",
    [
        {"complex_human_instruction": []},
        {"complex_human_instruction": None, "max_sequence_length": 16},
        {"complex_human_instruction": ["Draw this:", "User Prompt: "], "max_sequence_length": 12},
        {"clean_caption": True, "max_sequence_length": 40},
    ],
)
def test_load_options_are_the_stock_pipeline_arguments(sana_dir: Path, stock_sana, options):
    family = load_family(load_options(sana_dir, family_options=options), None)
    stock = {
        "complex_human_instruction": options.get("complex_human_instruction", STOCK_INSTRUCTION),
        "max_sequence_length": options.get("max_sequence_length", 300),
        "clean_caption": options.get("clean_caption", False),
    }
    assert family.describe()["family_options"] == {
        **stock,
        "complex_human_instruction": list(stock["complex_human_instruction"] or []),
    }
    (image,) = run_lens(family, PROMPTS[1:], [Item(0, family.num_layers, 1)])
    np.testing.assert_array_equal(image, stock_image(stock_sana, PROMPTS[1], 1, **stock))
    conditioning = family.conditioning(PROMPTS[1], [0])[0]
    assert conditioning["prompt_embeds"].shape[1] == stock["max_sequence_length"]
    assert conditioning["prompt_attention_mask"].shape == (1, stock["max_sequence_length"])


def test_layers_give_different_images_and_batches_change_nothing(sana_family):
    check_batches_change_nothing(run_lens, sana_family, PROMPTS, layers=(0, 3))


@pytest.mark.parametrize("instruction", [STOCK_INSTRUCTION, []])
def test_a_cut_prompt_is_reported_exactly_when_the_stock_pipeline_cuts_it(sana_dir: Path, instruction):
    """Counted independently: the stock pipeline cuts the instruction + prompt at the instruction's tokens
    + max_sequence_length - 2 (without an instruction: the prompt at max_sequence_length)."""
    length = 8
    family = load_family(
        load_options(
            sana_dir, family_options={"max_sequence_length": length, "complex_human_instruction": instruction}
        ),
        None,
    )
    tokenizer = family.pipe.tokenizer
    chi = "\n".join(instruction)
    budget = len(tokenizer.encode(chi)) + length - 2 if instruction else length
    prompts = [" ".join(["red apple"] * words) for words in range(1, 8)]
    cut = [len(tokenizer(chi + prompt).input_ids) > budget for prompt in prompts]
    assert any(cut) and not all(cut)
    for prompt, stock_cuts in zip(prompts, cut, strict=True):
        tokens, limit = family.token_count(prompt)
        assert limit == length and (tokens > limit) == stock_cuts, prompt
    reported = truncations(family, prompts, [Item(p, 3, 0) for p in range(len(prompts))])
    assert [found["prompt"] for found in reported] == [p for p, c in enumerate(cut) if c]


def test_options_are_checked(sana_dir: Path, sana_family):
    for options, message in [
        ({"complex_human_instruction": "draw"}, r"family_options\.complex_human_instruction"),
        ({"complex_human_instruction": [1]}, r"family_options\.complex_human_instruction"),
        ({"max_sequence_length": 0}, r"family_options\.max_sequence_length"),
        ({"clean_captions": True}, "the sana family has no such option"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            load_family(load_options(sana_dir, family_options=options), None)
    bad = SamplerSettings(**{**SETTINGS.__dict__, "family_options": {"use_resolution_binning": "yes"}})
    with pytest.raises(BadRequest, match=r"field 'family_options\.use_resolution_binning' must be a boolean"):
        run_lens(sana_family, PROMPTS[:1], [Item(0, 0, 0)], bad)
    odd = SamplerSettings(**{**SETTINGS.__dict__, "height": 48})
    with pytest.raises(BadRequest, match="divisible by 32, not 48x64"):
        run_lens(sana_family, PROMPTS[:1], [Item(0, 0, 0)], odd)
    euler = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler"})
    with pytest.raises(BadRequest, match="'euler' is not a scheduler of the sana family"):
        run_lens(sana_family, PROMPTS[:1], [Item(0, 0, 0)], euler)


def test_resolution_binning_without_a_table_is_refused(sana_family):
    transformer = sana_family.pipe.transformer
    binned = SamplerSettings(**{**SETTINGS.__dict__, "family_options": {}})
    transformer.register_to_config(sample_size=24)
    try:
        with pytest.raises(BadRequest, match="sample_size is 24, for which the stock pipeline has no"):
            run_lens(sana_family, PROMPTS[:1], [Item(0, 0, 0)], binned)
    finally:
        transformer.register_to_config(sample_size=16)


def test_a_named_scheduler_is_the_stock_pipeline_with_that_scheduler(sana_family, stock_sana):
    unipc = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "unipc"})
    (image,) = run_lens(sana_family, PROMPTS[:1], [Item(0, sana_family.num_layers, 4)], unipc)
    original = stock_sana.scheduler
    stock_sana.scheduler = UniPCMultistepScheduler.from_config(original.config)
    try:
        expected = stock_image(stock_sana, PROMPTS[0], 4)
    finally:
        stock_sana.scheduler = original
    np.testing.assert_array_equal(image, expected)
    assert not np.array_equal(image, run_lens(sana_family, PROMPTS[:1], [Item(0, 3, 4)])[0])
