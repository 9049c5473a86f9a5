"""The committed shapes model (models/shapes): loads like any checkpoint, the lens reproduces the stock
pipeline at its final layer, it draws held-out prompts right, and it fits the repository's size budget."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusion_lens.families import SamplerSettings, load_family
from diffusion_lens.generation import Item, LensOptions, generate
from diffusion_lens.shapes.bench import heldout_scenes
from diffusion_lens.shapes.model import MAX_TOKENS, TEXT_LAYERS, build_tokenizer
from diffusion_lens.shapes.scorer import score
from diffusion_lens.shapes.world import vocabulary

from .conftest import load_options

MODEL = Path(__file__).resolve().parents[2] / "models" / "shapes"
PROMPT = "a green cross above a purple bar"


@pytest.fixture(scope="module")
def shapes_family():
    return load_family(load_options(MODEL), None)


def test_it_is_committed_and_small():
    weights = list(MODEL.rglob("*.safetensors"))
    assert {p.parent.name for p in weights} == {"text_encoder", "unet", "vae"}
    assert sum(p.stat().st_size for p in MODEL.rglob("*") if p.is_file()) < 40 * 2**20
    assert not list(MODEL.rglob("*.bin")) and not list(MODEL.rglob("*.ckpt"))
    assert (MODEL / "README.md").is_file()


def test_final_layer_reproduces_the_stock_pipeline(shapes_family):
    from diffusers import StableDiffusionPipeline

    assert shapes_family.num_layers == TEXT_LAYERS
    settings = SamplerSettings(num_inference_steps=8, guidance_scale=5.0, height=32, width=32, scheduler=None)
    images: list[np.ndarray] = []
    generate(
        shapes_family, [PROMPT], [Item(0, TEXT_LAYERS, 3)], settings, LensOptions(),
        lambda index, item, stage, image, ms: images.append(image), lambda progress: None,
    )  # fmt: skip
    stock = StableDiffusionPipeline.from_pretrained(str(MODEL))
    stock.set_progress_bar_config(disable=True)
    expected = stock(
        PROMPT, num_inference_steps=8, guidance_scale=5.0, height=32, width=32,
        generator=torch.Generator().manual_seed(3), output_type="pil",
    ).images[0]  # fmt: skip
    np.testing.assert_array_equal(images[0], np.asarray(expected))


def test_final_layer_quality_on_held_out_prompts(shapes_family):
    # A smoke test of the weights (`npm run shapes-bench` measures them): 8 fixed single-object prompts the
    # model never saw, one seed, scored from the pixels by the ground-truth scorer.
    scenes = [scene for scene in heldout_scenes(8) if scene.kind == "single"]
    assert len(scenes) == 8
    settings = SamplerSettings(
        num_inference_steps=20, guidance_scale=5.0, height=32, width=32, scheduler=None
    )
    images: dict[int, np.ndarray] = {}
    generate(
        shapes_family, [scene.prompt for scene in scenes], [Item(i, TEXT_LAYERS, 0) for i in range(8)],
        settings, LensOptions(), lambda index, item, stage, image, ms: images.__setitem__(item.prompt, image),
        lambda progress: None,
    )  # fmt: skip
    wrong = [scene.prompt for i, scene in enumerate(scenes) if not score(scene, images[i])["color_shape"]]
    assert len(wrong) <= 2, f"colour and shape wrong for {wrong}"


def test_the_tokenizer_keeps_grammar_words_whole():
    tokenizer = build_tokenizer()
    assert tokenizer.model_max_length == MAX_TOKENS
    for word in vocabulary():
        assert tokenizer.tokenize(word) == [f"{word}</w>"], word
    longest = max((len(tokenizer(p).input_ids) for p in (PROMPT, "three large orange diamonds")), default=0)
    assert longest <= MAX_TOKENS


def test_the_tokenizer_is_the_same_in_every_process():
    # Token ids are part of a model trained from scratch: a rebuilt tokenizer must give the same ones.
    code = (
        "import json; from diffusion_lens.shapes.model import build_tokenizer; t = build_tokenizer(); "
        "print(json.dumps([t.get_vocab(), t.tokenize('a reddish hello')], sort_keys=True))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    built = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout
        for _ in range(3)
    }
    assert len(built) == 1
