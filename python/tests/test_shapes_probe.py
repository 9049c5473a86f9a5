"""The position probe: its ink centre finds where the renderer placed an object, and on the committed
model both probes show that the position words are used (the v2 model failed both: its encoder kept
"left" and "right" 0.40 apart against 13.4 for two colours, and its first prediction leaned 0.0 px);
and its VAE keeps every palette colour (v4's turned green half-way to cyan: 0.46 of green count scenes
survived its round trip)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from diffusion_lens.shapes import probe
from diffusion_lens.shapes.render import draw, layout
from diffusion_lens.shapes.world import COLORS, Obj, Scene


@pytest.mark.parametrize("position", probe.PLACES)
def test_the_ink_centre_is_where_the_renderer_placed_the_object(position):
    scene = Scene("single", (Obj("blue", "square", "large"),), position=position)
    placed = layout(scene, 32, random.Random(3))
    pixels = draw(placed, 32).astype(np.float64).transpose(2, 0, 1) / 127.5 - 1
    x, y = probe.ink_centre(pixels)
    expected_x, expected_y = placed[0].center(32)
    assert abs(x - expected_x * 32) <= 1.0 and abs(y - expected_y * 32) <= 1.0


def test_a_blank_image_has_its_ink_centre_in_the_middle():
    assert probe.ink_centre(np.ones((3, 32, 32))) == (15.5, 15.5)


def test_the_committed_model_uses_its_position_words():
    from diffusers import StableDiffusionPipeline

    found = probe.probe(StableDiffusionPipeline.from_pretrained(probe.DEFAULT_MODEL), objects=4, noises=16)
    assert found.position_words_apart > 0.25 * found.colour_words_apart
    lean_x, lean_y = found.lean
    data_x, data_y = found.data_lean
    assert data_x > 14 and data_y > 14  # the training scenes' own lean: the probe's yardstick
    assert lean_x > 0.4 * data_x and lean_y > 0.4 * data_y


def test_the_committed_vae_keeps_every_colour():
    from diffusers import StableDiffusionPipeline

    found = probe.vae_round_trip(StableDiffusionPipeline.from_pretrained(probe.DEFAULT_MODEL))
    assert set(found) == set(COLORS)
    for color, (error, share) in found.items():
        assert error < 12 and share >= 0.95, color
