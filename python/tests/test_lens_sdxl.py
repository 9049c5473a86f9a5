"""The lens on SDXL: layer L - 1 is the stock pipeline (both encoders' penultimate hidden states, no
norm, the stock pooled vector and unconditional branch); layer l is the stock pipeline fed embeddings
built independently here; batches change nothing."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lens.families import Readout, SamplerSettings, detect_family
from diffusion_lens.generation import BadRequest, Item

from .conftest import check_batches_change_nothing, lens_images, stock_settings_image

PROMPTS = ["a red apple", "two blue cubes on a table"]
SETTINGS = SamplerSettings(num_inference_steps=3, guidance_scale=5.0, height=32, width=32, scheduler=None)


def run_lens(family, prompts, items, settings=SETTINGS, **options) -> list[np.ndarray]:
    return lens_images(family, prompts, items, settings, **options)


def stock_image(pipe, prompt: str | None, seed: int, **kwargs) -> np.ndarray:
    return stock_settings_image(pipe, prompt, seed, SETTINGS, **kwargs)


def hidden_states(tokenizer, encoder, prompt: str):
    tokens = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return encoder(tokens.input_ids, output_hidden_states=True)


def test_detects_and_describes_the_family(sdxl_dir: Path, sdxl_family):
    assert detect_family(str(sdxl_dir)) == "sdxl"
    assert sdxl_family.num_layers == 5 and sdxl_family.stock_layer == 4
    described = sdxl_family.describe()
    assert described["encoders"] == [
        {
            "name": "text_encoder",
            "class_name": "CLIPTextModel",
            "layers": 3,
            "stock_index": 2,
            "indices": [0, 0, 0, 1, 2, 3],  # aligned at the outputs with the second (5 layers)
            "norm": None,
            "sequence": True,
            "pooled": False,
            "pooled_indices": None,
        },
        {
            "name": "text_encoder_2",
            "class_name": "CLIPTextModelWithProjection",
            "layers": 5,
            "stock_index": 4,
            "indices": [0, 1, 2, 3, 4, 5],
            "norm": None,
            "sequence": True,
            "pooled": True,
            "pooled_indices": [1, 2, 3, 4, 5, 5],  # the stock layer 4 pools the last state, as stock
        },
    ]
    assert described["defaults"] == {
        "steps": 50,
        "guidance": 5.0,
        "height": 32,
        "width": 32,
        "scheduler": "EulerDiscreteScheduler",
    }


def test_the_stock_layer_is_the_stock_pipeline(sdxl_family, stock_sdxl):
    for seed in (0, 6):
        (image,) = run_lens(sdxl_family, PROMPTS[:1], [Item(0, sdxl_family.stock_layer, seed)])
        np.testing.assert_array_equal(image, stock_image(stock_sdxl, PROMPTS[0], seed))


def test_a_negative_prompt_is_encoded_as_stock(sdxl_family, stock_sdxl):
    layer = sdxl_family.stock_layer
    (image,) = run_lens(sdxl_family, PROMPTS[1:], [Item(0, layer, 2)], negative_prompt="blurry")
    np.testing.assert_array_equal(image, stock_image(stock_sdxl, PROMPTS[1], 2, negative_prompt="blurry"))


@pytest.mark.parametrize(("layer", "first"), [(0, 0), (1, 0), (3, 1), (5, 3)])
def test_each_layer_is_the_stock_pipeline_fed_those_hidden_states(sdxl_family, stock_sdxl, layer, first):
    """Built here from the encoders' raw hidden states: the second's index ``layer``, the first's
    ``layer - 2`` (5 and 3 layers, aligned at the outputs), concatenated; pooled and negative as stock."""
    one = hidden_states(stock_sdxl.tokenizer, stock_sdxl.text_encoder, PROMPTS[0]).hidden_states
    two = hidden_states(stock_sdxl.tokenizer_2, stock_sdxl.text_encoder_2, PROMPTS[0])
    embeds = torch.cat([one[first], two.hidden_states[layer]], dim=-1)
    expected = stock_image(
        stock_sdxl,
        None,
        1,
        prompt_embeds=embeds,
        pooled_prompt_embeds=two.text_embeds,
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_pooled_prompt_embeds=torch.zeros_like(two.text_embeds),
    )
    (image,) = run_lens(sdxl_family, PROMPTS[:1], [Item(0, layer, 1)])
    np.testing.assert_array_equal(image, expected)


def test_layers_differ_and_batches_change_nothing(sdxl_family):
    check_batches_change_nothing(run_lens, sdxl_family, PROMPTS, layers=(1, 4), seeds=(0, 3))


def lensed_with_stock_negative(stock_sdxl, embeds, pooled, seed: int) -> np.ndarray:
    return stock_image(
        stock_sdxl,
        None,
        seed,
        prompt_embeds=embeds,
        pooled_prompt_embeds=pooled,
        negative_prompt_embeds=torch.zeros_like(embeds),
        negative_pooled_prompt_embeds=torch.zeros_like(pooled),
    )


def test_only_the_chosen_encoder_follows_the_layer(sdxl_family, stock_sdxl):
    """lens.encoders = [text_encoder]: the first encoder at layer 3 (its index 1), the second at its stock
    index 4."""
    one = hidden_states(stock_sdxl.tokenizer, stock_sdxl.text_encoder, PROMPTS[0]).hidden_states
    two = hidden_states(stock_sdxl.tokenizer_2, stock_sdxl.text_encoder_2, PROMPTS[0])
    embeds = torch.cat([one[1], two.hidden_states[4]], dim=-1)
    expected = lensed_with_stock_negative(stock_sdxl, embeds, two.text_embeds, 3)
    readout = Readout(encoders=frozenset({"text_encoder"}))
    (image,) = run_lens(sdxl_family, PROMPTS[:1], [Item(0, 3, 3)], readout=readout)
    np.testing.assert_array_equal(image, expected)


def test_pooled_vector_from_the_same_depth_or_the_empty_prompt(sdxl_family, stock_sdxl):
    """pooled: same-layer at layer 2 is the projection of a second encoder cut after 3 blocks (as far back
    from its last as 2 is from the stock layer 4); pooled: empty is the empty prompt's stock vector."""
    one = hidden_states(stock_sdxl.tokenizer, stock_sdxl.text_encoder, PROMPTS[1]).hidden_states
    two = hidden_states(stock_sdxl.tokenizer_2, stock_sdxl.text_encoder_2, PROMPTS[1])
    embeds = torch.cat([one[0], two.hidden_states[2]], dim=-1)
    cut = copy.deepcopy(stock_sdxl.text_encoder_2)
    cut.text_model.encoder.layers = cut.text_model.encoder.layers[:3]
    pooled_cut = hidden_states(stock_sdxl.tokenizer_2, cut, PROMPTS[1]).text_embeds
    pooled_empty = hidden_states(stock_sdxl.tokenizer_2, stock_sdxl.text_encoder_2, "").text_embeds
    assert not torch.equal(pooled_cut, two.text_embeds)
    for mode, pooled in (("same-layer", pooled_cut), ("empty", pooled_empty)):
        (image,) = run_lens(sdxl_family, PROMPTS[1:], [Item(0, 2, 4)], readout=Readout(pooled=mode))
        np.testing.assert_array_equal(image, lensed_with_stock_negative(stock_sdxl, embeds, pooled, 4))


def test_a_readout_the_model_cannot_give_is_refused(sdxl_family, sd_family):
    with pytest.raises(BadRequest, match=r"text_encoder_3 is not a sequence text encoder.*text_encoder_2"):
        run_lens(
            sdxl_family, PROMPTS[:1], [Item(0, 1, 0)], readout=Readout(encoders=frozenset({"text_encoder_3"}))
        )
    with pytest.raises(BadRequest, match="no pooled text vector"):
        run_lens(sd_family, PROMPTS[:1], [Item(0, 1, 0)], readout=Readout(pooled="same-layer"))
