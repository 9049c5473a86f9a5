"""The lens on Flux.1: layer L is the stock pipeline (T5's last hidden state, CLIP's pooled vector, the
embedded guidance, no unconditional branch); layer l is the stock pipeline fed a T5 cut after block l;
batches change nothing; what a distilled model has no use for is refused."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from diffusion_lens.families import Readout, SamplerSettings, detect_family
from diffusion_lens.generation import BadRequest, Item

from .conftest import check_batches_change_nothing, lens_images, stock_settings_image

PROMPTS = ["a red apple", "two blue cubes on a table"]
TOKENS = 32  # the fixture family's max_sequence_length (the stock default is 512)
SETTINGS = SamplerSettings(num_inference_steps=3, guidance_scale=3.5, height=32, width=32, scheduler=None)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> list[np.ndarray]:
    return lens_images(family, prompts, items, settings, **options)


def stock_image(pipe, prompt: str | None, seed: int, **kwargs) -> np.ndarray:
    return stock_settings_image(pipe, prompt, seed, SETTINGS, max_sequence_length=TOKENS, **kwargs)


def test_detects_and_describes_the_family(flux_dir: Path, flux_family):
    assert detect_family(str(flux_dir)) == "flux"
    assert flux_family.num_layers == 3 and flux_family.guidance == "distilled"
    described = flux_family.describe()
    assert described["defaults"] == {
        "steps": 28,
        "guidance": 3.5,
        "height": 256,
        "width": 256,
        "scheduler": "FlowMatchEulerDiscreteScheduler",
    }
    assert described["family_options"] == {"max_sequence_length": TOKENS}


def test_final_layer_is_the_stock_pipeline(flux_family, stock_flux):
    for seed in (0, 4):
        (image,) = run_lens(flux_family, PROMPTS[:1], [Item(0, flux_family.num_layers, seed)])
        np.testing.assert_array_equal(image, stock_image(stock_flux, PROMPTS[0], seed))


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_each_layer_is_the_stock_pipeline_with_a_cut_t5(flux_family, stock_flux, layer):
    """Built independently: the stock pipeline encodes with a T5 cut after ``layer`` blocks."""
    encoder = copy.deepcopy(stock_flux.text_encoder_2)
    encoder.encoder.block = encoder.encoder.block[:layer]
    cut = type(stock_flux)(**{**stock_flux.components, "text_encoder_2": encoder})
    cut.set_progress_bar_config(disable=True)
    embeds, pooled, _ = cut.encode_prompt(PROMPTS[1], prompt_2=None, max_sequence_length=TOKENS)
    expected = stock_image(stock_flux, None, 2, prompt_embeds=embeds, pooled_prompt_embeds=pooled)
    (image,) = run_lens(flux_family, PROMPTS[1:], [Item(0, layer, 2)])
    np.testing.assert_array_equal(image, expected)


def test_layers_differ_and_batches_change_nothing(flux_family):
    check_batches_change_nothing(run_lens, flux_family, PROMPTS, layers=(0, 3))


def test_what_a_distilled_model_has_no_use_for_is_refused(flux_family):
    with pytest.raises(BadRequest, match="guidance-distilled"):
        run_lens(flux_family, PROMPTS[:1], [Item(0, 0, 0)], negative_prompt="blurry")
    with pytest.raises(BadRequest, match="guidance-distilled"):
        run_lens(flux_family, PROMPTS[:1], [Item(0, 0, 0)], uncond="same-layer")
    euler = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler"})
    with pytest.raises(
        BadRequest, match="'euler' is not a scheduler of the flux family; choose one of default"
    ):
        run_lens(flux_family, PROMPTS[:1], [Item(0, 0, 0)], euler)


@pytest.mark.parametrize(("layer", "clip_blocks"), [(2, 1), (0, 0)])
def test_pooled_vector_from_the_same_depth(flux_family, stock_flux, layer, clip_blocks):
    """pooled: same-layer takes CLIP (2 layers) as far back from its last state as the layer is from T5's
    (3): built here as the stock pipeline with a CLIP cut after that many blocks."""
    clip = copy.deepcopy(stock_flux.text_encoder)
    blocks = getattr(clip, "text_model", clip).encoder  # CLIPTextModel is flat from transformers 5.6 on
    blocks.layers = blocks.layers[:clip_blocks]
    t5 = copy.deepcopy(stock_flux.text_encoder_2)
    t5.encoder.block = t5.encoder.block[:layer]
    cut = type(stock_flux)(**{**stock_flux.components, "text_encoder": clip, "text_encoder_2": t5})
    embeds, pooled, _ = cut.encode_prompt(PROMPTS[0], prompt_2=None, max_sequence_length=TOKENS)
    expected = stock_image(stock_flux, None, 1, prompt_embeds=embeds, pooled_prompt_embeds=pooled)
    (image,) = run_lens(flux_family, PROMPTS[:1], [Item(0, layer, 1)], readout=Readout(pooled="same-layer"))
    np.testing.assert_array_equal(image, expected)


def test_pooled_vector_of_the_empty_prompt(flux_family, stock_flux):
    """pooled: empty, as the authors' Flux notebook: the sequence of the prompt, the pooled vector of ""."""
    embeds, _, _ = stock_flux.encode_prompt(PROMPTS[1], prompt_2=None, max_sequence_length=TOKENS)
    _, empty, _ = stock_flux.encode_prompt("", prompt_2=None, max_sequence_length=TOKENS)
    expected = stock_image(stock_flux, None, 0, prompt_embeds=embeds, pooled_prompt_embeds=empty)
    last = flux_family.num_layers
    (image,) = run_lens(flux_family, PROMPTS[1:], [Item(0, last, 0)], readout=Readout(pooled="empty"))
    np.testing.assert_array_equal(image, expected)
