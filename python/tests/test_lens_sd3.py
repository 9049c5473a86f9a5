"""The lens on SD3: the stock layer is the stock pipeline (both CLIPs' penultimate states, padded, then
T5's last; both CLIPs' pooled projections; the negative prompt at the stock layer); layer l is the stock
pipeline fed embeddings built independently here, every encoder stepped back from its stock layer;
without T5, zeros as stock; batches change nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lens.families import Readout, SamplerSettings, detect_family, load_family
from diffusion_lens.generation import Item

from .conftest import check_batches_change_nothing, lens_images, stock_settings_image

PROMPTS = ["a red apple", "two blue cubes on a table"]
TOKENS = 32  # the fixture family's max_sequence_length (the stock default is 256)
SETTINGS = SamplerSettings(num_inference_steps=3, guidance_scale=7.0, height=32, width=32, scheduler=None)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> list[np.ndarray]:
    return lens_images(family, prompts, items, settings, **options)


def stock_image(pipe, prompt: str | None, seed: int, **kwargs) -> np.ndarray:
    return stock_settings_image(pipe, prompt, seed, SETTINGS, max_sequence_length=TOKENS, **kwargs)


def test_detects_and_describes_the_family(sd3_dir: Path, sd3_family):
    assert detect_family(str(sd3_dir)) == "sd3"
    assert sd3_family.num_layers == 3 and sd3_family.stock_layer == 3
    assert [e["layers"] for e in sd3_family.describe()["encoders"]] == [3, 4, 3]
    assert sd3_family.describe()["defaults"]["steps"] == 28


def test_the_stock_layer_is_the_stock_pipeline(sd3_family, stock_sd3):
    for seed in (0, 3):
        (image,) = run_lens(sd3_family, PROMPTS[:1], [Item(0, sd3_family.stock_layer, seed)])
        np.testing.assert_array_equal(image, stock_image(stock_sd3, PROMPTS[0], seed))
    (image,) = run_lens(sd3_family, PROMPTS[1:], [Item(0, 3, 1)], negative_prompt="blurry")
    np.testing.assert_array_equal(image, stock_image(stock_sd3, PROMPTS[1], 1, negative_prompt="blurry"))


def clip_states(tokenizer, encoder, prompt: str):
    tokens = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(tokens.input_ids, output_hidden_states=True)


@pytest.mark.parametrize(("layer", "first", "second"), [(0, 0, 0), (1, 0, 1), (2, 1, 2)])
def test_each_layer_is_the_stock_pipeline_fed_those_states(sd3_family, stock_sd3, layer, first, second):
    """Stock layer 3 is CLIP-L index 2 and CLIP-G index 3 (their penultimates) and T5's last: layer l
    steps each back by 3 - l. Built here: CLIP states raw, T5 from a T5 cut after block l."""
    one = clip_states(stock_sd3.tokenizer, stock_sd3.text_encoder, PROMPTS[0])
    two = clip_states(stock_sd3.tokenizer_2, stock_sd3.text_encoder_2, PROMPTS[0])
    t5 = copy.deepcopy(stock_sd3.text_encoder_3)
    t5.encoder.block = t5.encoder.block[:layer]
    cut = type(stock_sd3)(**{**stock_sd3.components, "text_encoder_3": t5})
    sequence = cut._get_t5_prompt_embeds(PROMPTS[0], max_sequence_length=TOKENS)
    clip = torch.cat([one.hidden_states[first], two.hidden_states[second]], dim=-1)
    clip = torch.nn.functional.pad(clip, (0, sequence.shape[-1] - clip.shape[-1]))
    _, negative_embeds, pooled, negative_pooled = stock_sd3.encode_prompt(
        PROMPTS[0], PROMPTS[0], PROMPTS[0], negative_prompt="", max_sequence_length=TOKENS
    )
    expected = stock_image(
        stock_sd3,
        None,
        2,
        prompt_embeds=torch.cat([clip, sequence], dim=-2),
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=negative_embeds,
        negative_pooled_prompt_embeds=negative_pooled,
    )
    (image,) = run_lens(sd3_family, PROMPTS[:1], [Item(0, layer, 2)])
    np.testing.assert_array_equal(image, expected)


def test_only_the_chosen_encoders_follow_the_layer(sd3_family, stock_sd3):
    """lens.encoders = [text_encoder_3]: T5 cut after block 1, both CLIPs at their stock (penultimate)
    states: the stock prompt embedding but for T5's part."""
    t5 = copy.deepcopy(stock_sd3.text_encoder_3)
    t5.encoder.block = t5.encoder.block[:1]
    cut = type(stock_sd3)(**{**stock_sd3.components, "text_encoder_3": t5})
    embeds, _, pooled, negative_pooled = cut.encode_prompt(
        PROMPTS[1], PROMPTS[1], PROMPTS[1], negative_prompt="", max_sequence_length=TOKENS
    )
    _, stock_negative, _, _ = stock_sd3.encode_prompt(
        PROMPTS[1], PROMPTS[1], PROMPTS[1], negative_prompt="", max_sequence_length=TOKENS
    )
    expected = stock_image(
        stock_sd3,
        None,
        4,
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=stock_negative,
        negative_pooled_prompt_embeds=negative_pooled,
    )
    readout = Readout(encoders=frozenset({"text_encoder_3"}))
    (image,) = run_lens(sd3_family, PROMPTS[1:], [Item(0, 1, 4)], readout=readout)
    np.testing.assert_array_equal(image, expected)


def test_without_t5_as_stock(sd3_dir: Path):
    """A checkpoint loaded without T5: zeros in its place, as stock; the lens then runs over CLIP-G."""
    from .conftest import load_options, stock_pipeline

    family = load_family(load_options(sd3_dir, family_options={"max_sequence_length": TOKENS}), None)
    family.pipe.text_encoder_3 = None
    assert family.num_layers == 4 and family.stock_layer == 3
    stock = stock_pipeline("StableDiffusion3Pipeline", sd3_dir, text_encoder_3=None, tokenizer_3=None)
    (image,) = run_lens(family, PROMPTS[:1], [Item(0, 3, 5)])
    np.testing.assert_array_equal(image, stock_image(stock, PROMPTS[0], 5))


def test_layers_differ_and_batches_change_nothing(sd3_family):
    check_batches_change_nothing(run_lens, sd3_family, PROMPTS, layers=(0, 3))
