"""The lens on PixArt-alpha/Sigma: the last layer is the stock pipeline; layer l is the stock pipeline fed
a T5 cut after block l, with the attention mask; resolution binning as stock; batches change nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from diffusers import PixArtAlphaPipeline, PixArtSigmaPipeline

from diffusion_lens.families import SamplerSettings, detect_family, load_family
from diffusion_lens.fixtures import save_fixture
from diffusion_lens.generation import BadRequest, Item

from .conftest import check_batches_change_nothing, lens_images, load_options, stock_settings_image

PROMPTS = ["a red apple", "Two blue cubes on a table <b>http://example.com</b>"]
# Small images without binning, for speed; one test runs the stock default (binning, 256 px).
UNBINNED = {"use_resolution_binning": False}
SETTINGS = SamplerSettings(
    num_inference_steps=3, guidance_scale=4.5, height=64, width=64, scheduler=None, family_options=UNBINNED
)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> list[np.ndarray]:
    return lens_images(family, prompts, items, settings, **options)


def stock_image(pipe, prompt: str, seed: int, settings: SamplerSettings = SETTINGS, **kwargs) -> np.ndarray:
    return stock_settings_image(pipe, prompt, seed, settings, **kwargs)


def truncated(pipe: PixArtAlphaPipeline, blocks: int) -> PixArtAlphaPipeline:
    """The stock pipeline with a T5 cut after ``blocks`` blocks: its output is the final norm of hidden
    state ``blocks``, which is what the lens must give for that layer."""
    encoder = copy.deepcopy(pipe.text_encoder)
    encoder.encoder.block = encoder.encoder.block[:blocks]
    cut = type(pipe)(**{**pipe.components, "text_encoder": encoder})
    cut.set_progress_bar_config(disable=True)
    return cut


def test_detects_and_describes_the_family(pixart_dir: Path, pixart_family):
    assert detect_family(str(pixart_dir)) == "pixart"
    assert pixart_family.num_layers == 3
    described = pixart_family.describe()
    assert described["pipeline_class"] == "PixArtAlphaPipeline"
    assert described["defaults"] == {
        "steps": 20,
        "guidance": 4.5,
        "height": 256,
        "width": 256,
        "scheduler": "DPMSolverMultistepScheduler",
    }
    assert described["family_options"] == {"clean_caption": True, "max_sequence_length": 120}
    assert described["encoders"] == [
        {
            "name": "text_encoder",
            "class_name": "T5EncoderModel",
            "layers": 3,
            "stock_index": 3,
            "indices": [0, 1, 2, 3],
            "norm": "encoder.final_layer_norm",
            "sequence": True,
            "pooled": False,
            "pooled_indices": None,
        }
    ]


def test_final_layer_is_the_stock_pipeline(pixart_family, stock_pixart):
    last = pixart_family.num_layers
    for seed in (0, 5):
        (image,) = run_lens(pixart_family, PROMPTS[1:], [Item(0, last, seed)])
        np.testing.assert_array_equal(image, stock_image(stock_pixart, PROMPTS[1], seed))


def test_stock_defaults_with_resolution_binning_and_a_negative_prompt(pixart_family, stock_pixart):
    """The stock default: binned to the nearest trained aspect ratio (here 64x128 asks for a bin and is
    resized back), with a negative prompt."""
    binned = SamplerSettings(
        num_inference_steps=2, guidance_scale=4.5, height=128, width=256, scheduler=None, family_options={}
    )
    last = pixart_family.num_layers
    (image,) = run_lens(pixart_family, PROMPTS[:1], [Item(0, last, 3)], binned, negative_prompt="blurry")
    assert image.shape == (128, 256, 3)
    expected = stock_image(stock_pixart, PROMPTS[0], 3, binned, negative_prompt="blurry")
    np.testing.assert_array_equal(image, expected)


@pytest.mark.parametrize("layer", [0, 1, 2])
def test_each_layer_is_the_stock_pipeline_with_a_cut_encoder(pixart_family, stock_pixart, layer):
    """Built independently: the stock pipeline encodes with a T5 cut after ``layer`` blocks (the mask as
    stock), the unconditional branch with the whole T5."""
    cut = truncated(stock_pixart, layer)
    embeds, mask, _, _ = cut.encode_prompt(PROMPTS[1], do_classifier_free_guidance=False, clean_caption=True)
    _, _, negative, negative_mask = stock_pixart.encode_prompt(
        "", do_classifier_free_guidance=True, clean_caption=True
    )
    expected = stock_image(
        stock_pixart,
        PROMPTS[1],
        2,
        negative_prompt=None,
        prompt_embeds=embeds,
        prompt_attention_mask=mask,
        negative_prompt_embeds=negative,
        negative_prompt_attention_mask=negative_mask,
    )
    (image,) = run_lens(pixart_family, PROMPTS[1:], [Item(0, layer, 2)])
    np.testing.assert_array_equal(image, expected)


def test_layers_give_different_images_and_batches_change_nothing(pixart_family):
    check_batches_change_nothing(run_lens, pixart_family, PROMPTS, layers=(0, 3))


def test_sigma_loads_as_its_own_pipeline(tmp_path: Path):
    sigma = load_family(load_options(save_fixture("pixart-sigma", tmp_path / "sigma")), None)
    assert isinstance(sigma.pipe, PixArtSigmaPipeline) and sigma.name == "pixart"
    assert sigma.describe()["family_options"]["max_sequence_length"] == 300
    stock = PixArtSigmaPipeline.from_pretrained(str(tmp_path / "sigma"))
    stock.set_progress_bar_config(disable=True)
    (image,) = run_lens(sigma, PROMPTS[:1], [Item(0, sigma.num_layers, 1)])
    np.testing.assert_array_equal(image, stock_image(stock, PROMPTS[0], 1))


def test_options_are_checked(pixart_dir: Path, pixart_family):
    short = load_family(load_options(pixart_dir, family_options={"max_sequence_length": 8}), None)
    assert short.token_count(PROMPTS[1])[1] == 8
    assert short.conditioning(PROMPTS[1], [3])[3]["prompt_attention_mask"].shape == (1, 8)
    with pytest.raises(BadRequest, match=r"field 'family_options\.use_resolution_binning' must be a boolean"):
        bad = SamplerSettings(**{**SETTINGS.__dict__, "family_options": {"use_resolution_binning": "yes"}})
        run_lens(pixart_family, PROMPTS[:1], [Item(0, 0, 0)], bad)


def test_a_named_scheduler_is_the_stock_pipeline_with_that_scheduler(pixart_family, stock_pixart):
    from diffusers import EulerDiscreteScheduler

    euler = SamplerSettings(**{**SETTINGS.__dict__, "scheduler": "euler"})
    (image,) = run_lens(pixart_family, PROMPTS[:1], [Item(0, pixart_family.num_layers, 4)], euler)
    original = stock_pixart.scheduler
    stock_pixart.scheduler = EulerDiscreteScheduler.from_config(original.config)
    try:
        expected = stock_image(stock_pixart, PROMPTS[0], 4)
    finally:
        stock_pixart.scheduler = original
    np.testing.assert_array_equal(image, expected)


def test_one_step_is_refused_without_an_lcm_scheduler(pixart_family):
    """The stock pipeline takes a one-step run for a DMD checkpoint and fails with any other scheduler."""
    one = SamplerSettings(**{**SETTINGS.__dict__, "num_inference_steps": 1})
    with pytest.raises(BadRequest, match="steps = 1 needs the LCM scheduler"):
        run_lens(pixart_family, PROMPTS[:1], [Item(0, 0, 0)], one)
