"""The ablations (lens.tokens, lens.mix, lens.embeds) on tensors: each changes the prompt's conditioning
exactly as specified, from the family's own un-ablated conditioning and positions counted with the
tokenizer directly, and leaves everything else (other arguments, the unconditional branch) untouched."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from diffusion_lens.ablations import Ablation, AblationError, Mix, parse_embeds, read_embeds, save_embeds
from diffusion_lens.families import Readout, SamplerSettings
from diffusion_lens.generation import BadRequest, Item, LensOptions, encode_all

from .test_lens_sd import SETTINGS, run_lens

PROMPT = "a red apple"
OTHER = "two blue cubes on a table"


def ablated(family, ablation, layers, prompts=(PROMPT,), **options):
    """(conditioning per (prompt, layer), unconditional per layer) with ``ablation``."""
    items = [Item(p, layer, 0) for p in range(len(prompts)) for layer in layers]
    return encode_all(family, list(prompts), items, LensOptions(ablation=ablation, **options))


def real_tokens(tokenizer, text: str) -> int:
    """Positions the prompt takes, its special tokens included: the rest is padding."""
    return len(tokenizer(text).input_ids)


def assert_positions(got, layer_state, stock_state, follow: list[int]) -> None:
    """``got`` is ``layer_state`` at ``follow`` and ``stock_state`` everywhere else, and the two differ at
    both (so the check could fail)."""
    positions = got.shape[1]
    rest = [p for p in range(positions) if p not in follow]
    assert torch.equal(got[:, follow], layer_state[:, follow])
    assert torch.equal(got[:, rest], stock_state[:, rest])
    assert not torch.equal(layer_state[:, follow], stock_state[:, follow])
    assert not rest or not torch.equal(layer_state[:, rest], stock_state[:, rest])


@pytest.mark.parametrize("tokens", ["prompt", "padding", 2])
def test_token_ablations_on_sd(sd_family, tokens):
    plain = sd_family.conditioning(PROMPT, [1, 5])
    n = real_tokens(sd_family.pipe.tokenizer, PROMPT)
    follow = {"prompt": list(range(n)), "padding": list(range(n, 77)), 2: [2]}[tokens]
    cond, _ = ablated(sd_family, Ablation(tokens=tokens), [1])
    got = cond[(0, 1)]["prompt_embeds"]
    assert_positions(got, plain[1]["prompt_embeds"], plain[5]["prompt_embeds"], follow)


def test_token_window_on_sd3_covers_both_clip_and_t5_positions(sd3_family):
    pipe, stock = sd3_family.pipe, sd3_family.stock_layer
    plain = sd3_family.conditioning(PROMPT, [1, stock])
    clip = real_tokens(pipe.tokenizer, PROMPT)
    t5 = real_tokens(pipe.tokenizer_3, PROMPT)
    follow = [*range(clip), *range(77, 77 + t5)]
    cond, _ = ablated(sd3_family, Ablation(tokens="prompt"), [1])
    assert_positions(
        cond[(0, 1)]["prompt_embeds"], plain[1]["prompt_embeds"], plain[stock]["prompt_embeds"], follow
    )
    # The pooled vector is not a position: it stays what the layer gives.
    assert torch.equal(cond[(0, 1)]["pooled_prompt_embeds"], plain[1]["pooled_prompt_embeds"])


def test_token_window_on_pixart_follows_the_mask_and_keeps_it(pixart_family):
    stock = pixart_family.stock_layer
    plain = pixart_family.conditioning(PROMPT, [0, stock])
    mask = plain[0]["prompt_attention_mask"][0]
    cond, _ = ablated(pixart_family, Ablation(tokens="padding"), [0])
    follow = [p for p in range(mask.shape[0]) if mask[p] == 0]
    assert len(follow) == mask.shape[0] - real_tokens(pixart_family.pipe.tokenizer, PROMPT)
    got = cond[(0, 0)]
    assert_positions(got["prompt_embeds"], plain[0]["prompt_embeds"], plain[stock]["prompt_embeds"], follow)
    assert torch.equal(got["prompt_attention_mask"], plain[0]["prompt_attention_mask"])


@pytest.mark.parametrize("uncond", ["final", "same-layer"])
def test_the_unconditional_branch_is_untouched(sd_family, uncond):
    _, plain = ablated(sd_family, Ablation(), [1, 3], uncond=uncond)
    for ablation in (Ablation(tokens="prompt"), Ablation(tokens=0)):
        _, got = ablated(sd_family, ablation, [1, 3], uncond=uncond)
        assert got.keys() == plain.keys()
        assert all(torch.equal(got[layer]["prompt_embeds"], plain[layer]["prompt_embeds"]) for layer in got)


def test_mix_interpolates_every_float_argument(sdxl_family):
    readout = Readout(pooled="same-layer")  # so that the pooled vector differs between the layers too
    plain = sdxl_family.conditioning(PROMPT, [0, 3], readout)
    for alpha, expected in ((0.0, plain[0]), (1.0, plain[3])):
        cond, _ = ablated(sdxl_family, Ablation(mix=Mix((0, 3), alpha)), [0], readout=readout)
        assert cond[(0, 0)].keys() == expected.keys()
        assert all(torch.equal(cond[(0, 0)][name], expected[name]) for name in expected)
    cond, _ = ablated(sdxl_family, Ablation(mix=Mix((0, 3), 0.25)), [0], readout=readout)
    for name in ("prompt_embeds", "pooled_prompt_embeds"):
        mixed = 0.75 * plain[0][name] + 0.25 * plain[3][name]
        assert torch.allclose(cond[(0, 0)][name], mixed, atol=1e-6)
        assert not torch.allclose(cond[(0, 0)][name], plain[0][name])


def test_mix_keeps_the_mask_and_composes_with_tokens(pixart_family):
    stock = pixart_family.stock_layer
    plain = pixart_family.conditioning(PROMPT, [0, 2, stock])
    cond, _ = ablated(pixart_family, Ablation(mix=Mix((0, 2), 0.5), tokens=1), [0])
    got = cond[(0, 0)]
    mixed = torch.lerp(plain[0]["prompt_embeds"], plain[2]["prompt_embeds"], 0.5)
    assert_positions(got["prompt_embeds"], mixed, plain[stock]["prompt_embeds"], [1])
    assert torch.equal(got["prompt_attention_mask"], plain[0]["prompt_attention_mask"])


def test_mix_at_alpha_zero_makes_layer_a_image(sd_family):
    items = [Item(0, 1, 0), Item(0, 1, 1)]
    plain, _ = run_lens(sd_family, [PROMPT], items)
    mixed, _ = run_lens(sd_family, [PROMPT], items, ablation=Ablation(mix=Mix((1, 4), 0.0)))
    halfway, _ = run_lens(sd_family, [PROMPT], items, ablation=Ablation(mix=Mix((1, 4), 0.5)))
    assert all(np.array_equal(a, b) for a, b in zip(plain, mixed, strict=True))
    assert not np.array_equal(plain[0], halfway[0])


def test_embeds_replace_only_the_arguments_they_name(sdxl_family, tmp_path):
    plain = sdxl_family.conditioning(PROMPT, [2])[2]
    other = sdxl_family.conditioning(OTHER, [2])[2]
    edited = plain["prompt_embeds"] + 1
    path = save_embeds(tmp_path / "one.safetensors", {"prompt_embeds": edited})
    cond, uncond = ablated(sdxl_family, Ablation(embeds=read_embeds(path)), [2], prompts=(PROMPT, OTHER))
    _, plain_uncond = ablated(sdxl_family, Ablation(), [2], prompts=(PROMPT, OTHER))
    for p, reference in ((0, plain), (1, other)):  # one row serves every prompt
        assert torch.equal(cond[(p, 2)]["prompt_embeds"], edited)
        assert torch.equal(cond[(p, 2)]["pooled_prompt_embeds"], reference["pooled_prompt_embeds"])
    assert torch.equal(uncond[2]["prompt_embeds"], plain_uncond[2]["prompt_embeds"])


def test_embeds_rows_are_found_by_prompt(sd_family, tmp_path):
    a, b = (sd_family.conditioning(text, [0])[0] for text in (PROMPT, OTHER))
    path = save_embeds(tmp_path / "rows.safetensors", {OTHER: b, PROMPT: a})
    cond, _ = ablated(sd_family, Ablation(embeds=read_embeds(path)), [3], prompts=(PROMPT, OTHER))
    assert torch.equal(cond[(0, 3)]["prompt_embeds"], a["prompt_embeds"])
    assert torch.equal(cond[(1, 3)]["prompt_embeds"], b["prompt_embeds"])
    with pytest.raises(BadRequest, match="no row for the prompt 'a third prompt'"):
        run_lens(sd_family, ["a third prompt"], [Item(0, 3, 0)], ablation=Ablation(embeds=read_embeds(path)))


def test_injecting_the_stock_embedding_at_layer_zero_gives_the_stock_image(sd_family, tmp_path):
    stock = sd_family.conditioning(PROMPT, [5])[5]
    path = save_embeds(tmp_path / "stock.safetensors", {PROMPT: stock})
    injected, _ = run_lens(sd_family, [PROMPT], [Item(0, 0, 7)], ablation=Ablation(embeds=read_embeds(path)))
    (expected,), _ = run_lens(sd_family, [PROMPT], [Item(0, 5, 7)])
    (layer_zero,), _ = run_lens(sd_family, [PROMPT], [Item(0, 0, 7)])
    assert np.array_equal(injected[0], expected)
    assert not np.array_equal(layer_zero, expected)


def test_embeds_files_are_checked(sd_family, tmp_path):
    good = sd_family.conditioning(PROMPT, [0])[0]["prompt_embeds"]
    cases = {
        "unknown": ({"text_embeds": good}, "'text_embeds' is not an argument of this model's conditioning"),
        "shape": (
            {"prompt_embeds": good[:, :10]},
            r"rows of shape \(10, 40\); this model's prompt_embeds has",
        ),
    }
    for name, (tensors, message) in cases.items():
        embeds = read_embeds(save_embeds(tmp_path / f"{name}.safetensors", tensors))
        with pytest.raises(BadRequest, match=message):
            run_lens(sd_family, [PROMPT], [Item(0, 0, 0)], ablation=Ablation(embeds=embeds))
    with pytest.raises(AblationError, match="not a safetensors file"):
        parse_embeds(b"not a safetensors file at all")
    two_rows = save_embeds(tmp_path / "two.safetensors", {"prompt_embeds": torch.cat([good, good])})
    with pytest.raises(AblationError, match=r"shape \(2, 77, 40\); expected one row \(no prompts metadata\)"):
        read_embeds(two_rows)
    data = (tmp_path / "unknown.safetensors").read_bytes()
    assert read_embeds(tmp_path / "unknown.safetensors", hashlib.sha256(data).hexdigest()).sha256
    with pytest.raises(AblationError, match="has changed since it was checked"):
        read_embeds(tmp_path / "unknown.safetensors", "0" * 64)
    with pytest.raises(AblationError, match=r"embeds\.path: cannot read"):
        read_embeds(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("ablation", "layers", "message"),
    [
        (Ablation(tokens="middle"), [0], "tokens must be one of all, prompt, padding or a position"),
        (Ablation(tokens=77), [0], r"tokens = 77 is not a position of this model's prompt_embeds \(0..76\)"),
        (Ablation(mix=Mix((0, 6), 0.5)), [0], r"mix.layers\[1\] = 6 is out of range 0..5"),
        (Ablation(mix=Mix((2, 2), 0.5)), [2], "mix.layers are both 2"),
        (Ablation(mix=Mix((0, 2), 1.5)), [0], r"mix.alpha = 1.5 is out of range 0..1"),
        (Ablation(mix=Mix((0, 2), 0.5)), [0, 1], "an item is layer 1, but with mix every item is layer"),
    ],
)
def test_bad_ablations_are_named(sd_family, ablation, layers, message):
    with pytest.raises(BadRequest, match=message):
        run_lens(sd_family, [PROMPT], [Item(0, layer, 0) for layer in layers], ablation=ablation)


def test_embeds_combine_with_neither_mix_nor_tokens(sd_family, tmp_path):
    good = sd_family.conditioning(PROMPT, [0])[0]
    embeds = read_embeds(save_embeds(tmp_path / "e.safetensors", good))
    with pytest.raises(BadRequest, match="embeds replaces the conditioning"):
        run_lens(sd_family, [PROMPT], [Item(0, 0, 0)], ablation=Ablation(tokens="prompt", embeds=embeds))


def test_done_names_the_lensed_tokens(sd_family):
    _, done = run_lens(sd_family, [PROMPT, OTHER], [Item(1, 2, 0)], SETTINGS, ablation=Ablation(tokens=1))
    tokens = sd_family.pipe.tokenizer.convert_ids_to_tokens(sd_family.pipe.tokenizer(OTHER).input_ids)
    assert done["lensed_tokens"] == [{"prompt": 1, "positions": [1], "tokens": [tokens[1]]}]
    _, done = run_lens(sd_family, [PROMPT], [Item(0, 2, 0)], ablation=Ablation(tokens="prompt"))
    n = real_tokens(sd_family.pipe.tokenizer, PROMPT)
    assert done["lensed_tokens"][0]["positions"] == list(range(n))
    _, done = run_lens(sd_family, [PROMPT], [Item(0, 2, 0)])
    assert done["lensed_tokens"] == []


@pytest.mark.parametrize("name", ["sd", "if", "pixart", "sdxl", "flux", "sd3"])
def test_every_family_names_a_token_per_position(request, name):
    family = request.getfixturevalue(f"{name}_family")
    tokens = family.tokens(PROMPT)
    embeds = family.conditioning(PROMPT, [family.stock_layer])[family.stock_layer]["prompt_embeds"]
    assert len(tokens) == embeds.shape[1]
    assert sum(token is not None for token in tokens) > 2
    assert tokens[-1] is None  # a short prompt leaves padding


def test_masked_padding_takes_no_part(pixart_family):
    """PixArt passes the attention mask to its transformer: lensing the padding alone changes nothing."""
    settings = SamplerSettings(num_inference_steps=2, guidance_scale=4.5, height=64, width=64, scheduler=None)
    stock = pixart_family.stock_layer
    (expected,), _ = run_lens(pixart_family, [PROMPT], [Item(0, stock, 0)], settings)
    (padding,), _ = run_lens(
        pixart_family, [PROMPT], [Item(0, 0, 0)], settings, ablation=Ablation(tokens="padding")
    )
    (prompt,), _ = run_lens(
        pixart_family, [PROMPT], [Item(0, 0, 0)], settings, ablation=Ablation(tokens="prompt")
    )
    assert np.array_equal(padding, expected)
    assert not np.array_equal(prompt, expected)
