"""Checkpoints as users have them: single-file checkpoints (diffusers' from_single_file with a config folder)
and LoRA weights (diffusers' LoRA loader), through the lens against the stock pipeline loaded the same way,
and the errors that say what to do instead."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from diffusion_lens.families import CheckpointError, LoraWeights, load_family
from diffusion_lens.fixtures import save_lora, save_single_file, tiny_sd_pipeline, tiny_sdxl_pipeline
from diffusion_lens.generation import Item

from .conftest import load_options, stock_pipeline
from .test_lens_sd import PROMPTS, run_lens, stock_image

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def sd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SD fixture's weights (the same seed: the same weights as ``sd_dir``) as one original-layout
    .safetensors file."""
    return save_single_file(tiny_sd_pipeline(), tmp_path_factory.mktemp("single") / "tiny-sd.safetensors")


@pytest.fixture(scope="module")
def sd_lora(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random LoRA weights for the tiny SD fixture's UNet and text encoder."""
    return save_lora(tiny_sd_pipeline(), tmp_path_factory.mktemp("lora") / "style.safetensors")


@pytest.fixture(scope="module")
def sd_with_lora(sd_dir: Path, sd_lora: Path):
    return load_family(load_options(sd_dir, lora=(LoraWeights(str(sd_lora), 0.5),)), None)


def stock_with_lora(folder: Path, lora: Path, scale: float) -> StableDiffusionPipeline:
    """The stock pipeline with the LoRA loaded as diffusers documents it (load_lora_weights, set_adapters)."""
    pipe = stock_pipeline("StableDiffusionPipeline", folder, safety_checker=None)
    pipe.load_lora_weights(str(lora.parent), weight_name=lora.name, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[scale])
    return pipe


# --- single-file checkpoints -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sd", "sdxl"])
def test_the_original_layout_round_trips_through_from_single_file(kind, tmp_path):
    """The fixture's exporter is the inverse of diffusers' conversion: the stock from_single_file gives every
    weight back unchanged (SDXL's two CLIPs need different widths, as the real ones have)."""
    pipe = tiny_sd_pipeline() if kind == "sd" else tiny_sdxl_pipeline(widths=(16, 24))
    pipe.save_pretrained(tmp_path / "folder")
    file = save_single_file(pipe, tmp_path / "model.safetensors")
    stock = type(pipe).from_single_file(str(file), config=str(tmp_path / "folder"), local_files_only=True)
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if getattr(pipe, name, None) is None:
            continue
        want, got = getattr(pipe, name).state_dict(), getattr(stock, name).state_dict()
        assert set(got) == set(want), name
        assert all(torch.equal(got[key], want[key]) for key in want), name


def test_a_single_file_through_the_lens_is_the_stock_single_file_image(sd_file, sd_dir, sd_family):
    family = load_family(load_options(sd_file, config=str(sd_dir)), None)
    info = family.describe()
    assert family.name == "sd" and family.num_layers == 5
    assert info["config"] == str(sd_dir) and info["revision"] is None and info["lora"] == []
    stock = StableDiffusionPipeline.from_single_file(
        str(sd_file), config=str(sd_dir), local_files_only=True, safety_checker=None
    )
    stock.set_progress_bar_config(disable=True)
    (image, other), _ = run_lens(family, PROMPTS[:1], [Item(0, 5, 3), Item(0, 2, 3)])
    np.testing.assert_array_equal(image, stock_image(stock, PROMPTS[0], 3))
    # The same weights as the fixture folder: the same images, at every layer.
    (folder_image, folder_other), _ = run_lens(sd_family, PROMPTS[:1], [Item(0, 5, 3), Item(0, 2, 3)])
    np.testing.assert_array_equal(image, folder_image)
    np.testing.assert_array_equal(other, folder_other)


def test_an_sdxl_single_file_gives_its_folders_images(tmp_path):
    pipe = tiny_sdxl_pipeline(widths=(16, 24))
    pipe.save_pretrained(tmp_path / "folder")
    file = save_single_file(pipe, tmp_path / "xl.safetensors")
    single = load_family(load_options(file, config=str(tmp_path / "folder")), None)
    folder = load_family(load_options(tmp_path / "folder"), None)
    assert single.name == "sdxl" and single.stock_layer == folder.stock_layer
    items = [Item(0, single.stock_layer, 1), Item(0, 0, 1)]
    got, _ = run_lens(single, PROMPTS[:1], items)
    want, _ = run_lens(folder, PROMPTS[:1], items)
    # The weights are bit-identical (see the round trip); the pooled projection's are aligned differently
    # in memory, which takes another CPU kernel path (1e-7 apart), so pixels may differ by one level.
    for a, b in zip(got, want, strict=True):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_a_file_without_weights_its_configuration_has_is_refused(tmp_path, sdxl_dir):
    """The SDXL fixture's two CLIPs have one width, so diffusers cannot tell them apart in a single file and
    leaves the second one unloaded: refused, not run with uninitialised weights."""
    from safetensors.torch import save_file

    from diffusion_lens.ldm_layout import original_weights

    pipe = tiny_sdxl_pipeline()
    with pytest.raises(ValueError, match="apart by width"):
        save_single_file(pipe, tmp_path / "xl.safetensors")
    save_file(
        {name: value.contiguous() for name, value in original_weights(pipe).items()},
        tmp_path / "xl.safetensors",
    )
    with pytest.raises(
        CheckpointError, match=r"does not hold all weights of the text_encoder_2 its configuration"
    ):
        load_family(load_options(tmp_path / "xl.safetensors", config=str(sdxl_dir)), None)


def test_a_pickled_single_file_needs_allow_pickle(tmp_path, sd_dir, sd_file):
    ckpt = save_single_file(tiny_sd_pipeline(), tmp_path / "tiny-sd.ckpt")
    with pytest.raises(CheckpointError) as caught:
        load_family(load_options(ckpt, config=str(sd_dir)), None)
    assert str(caught.value) == (
        f"model {ckpt} is a pickled single-file checkpoint, and only safetensors load by default, since "
        "loading a pickle can run code: if you trust it, pass --allow-pickle "
        "(config: model.allow_pickle: true)"
    )
    pickled = load_family(load_options(ckpt, config=str(sd_dir), allow_pickle=True), None)
    safe = load_family(load_options(sd_file, config=str(sd_dir)), None)
    want = safe.pipe.unet.state_dict()
    assert all(torch.equal(value, want[key]) for key, value in pickled.pipe.unet.state_dict().items())


def test_a_missing_single_file_is_named(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(CheckpointError, match=rf"^model file not found: {re.escape(str(missing))}$"):
        load_family(load_options(missing), None)


def test_without_config_the_inferred_hub_repo_comes_from_the_cache(empty_offline_hub, sd_file, sd_dir):
    """diffusers infers stable-diffusion-v1-5 from an SD 1.x-layout file; offline, its configuration loads
    when the cache has it, and otherwise the error says to pass --config DIR."""
    with pytest.raises(CheckpointError) as caught:
        load_family(load_options(sd_file), None)
    assert re.fullmatch(
        rf"model {re.escape(str(sd_file))} is a single-file checkpoint; its pipeline configuration "
        r"\(model_index\.json, the component configs, tokenizers\) is that of the hub repo "
        r"stable-diffusion-v1-5/stable-diffusion-v1-5, which its weights look like, which cannot be reached "
        r"\(HF_HUB_OFFLINE is set\) and is not in the local cache \(HF_HOME=.*\): pass --config DIR "
        r"\(config: model\.config\), a local diffusers folder of the same architecture "
        r"\(with model_index\.json\)",
        str(caught.value),
    ), str(caught.value)
    # The repo's configuration files in the cache, as diffusers would have downloaded them.
    repo = empty_offline_hub / "hub" / "models--stable-diffusion-v1-5--stable-diffusion-v1-5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(sd_dir, snapshot, ignore=shutil.ignore_patterns("*.safetensors"))
    family = load_family(load_options(sd_file), None)
    info = family.describe()
    assert family.name == "sd" and info["revision"] == COMMIT and info["config"] == str(snapshot)


def test_config_is_refused_where_it_does_not_apply(tmp_path, sd_dir, sd_file):
    config = str(sd_dir)
    cases = [
        (sd_dir, {"config": config}, r"^config .* is for a single-file checkpoint; model .* is a diffusers "),
        (sd_file, {"config": config, "variant": "fp16"}, r"^variant fp16 does not apply to the single-file "),
        (
            sd_file,
            {"config": config, "revision": "main"},
            r"^revision main is a hub revision, and the single",
        ),
        (sd_file, {"config": str(tmp_path / "none")}, r"^config folder not found: "),
        (
            sd_file,
            {"config": str(sd_file)},
            r"is a single-file checkpoint; config must be a diffusers checkpoint ",
        ),
    ]
    for model, options, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_family(load_options(model, **options), None)


def test_a_family_without_a_single_file_loader_says_so(sd_file, pixart_dir):
    with pytest.raises(
        CheckpointError,
        match=r"is a single-file checkpoint, and diffusers cannot load a PixArtAlphaPipeline from one \(it "
        r"has no from_single_file\): pass a diffusers checkpoint folder",
    ):
        load_family(load_options(sd_file, config=str(pixart_dir)), None)


# --- LoRA ----------------------------------------------------------------------------------------------


def test_a_lora_through_the_lens_is_the_stock_pipeline_with_it(sd_with_lora, sd_dir, sd_lora, sd_family):
    assert sd_with_lora.describe()["lora"] == [
        {"path": str(sd_lora), "scale": 0.5, "components": ["text_encoder", "unet"]}
    ]
    (image,), _ = run_lens(sd_with_lora, PROMPTS[:1], [Item(0, 5, 3)])
    # The stock pipeline encodes the prompt itself, through its LoRA'd text encoder.
    np.testing.assert_array_equal(image, stock_image(stock_with_lora(sd_dir, sd_lora, 0.5), PROMPTS[0], 3))
    (plain,), _ = run_lens(sd_family, PROMPTS[:1], [Item(0, 5, 3)])
    assert not np.array_equal(image, plain)


def test_the_lens_reads_the_lora_text_encoder(sd_with_lora, sd_family, sd_dir, sd_lora):
    """The hidden states the lens takes are those of the text encoder with the LoRA merged into its weights
    (W + scale * up @ down), an independent reference; the embeddings (layer 0) are untouched."""
    reference = stock_pipeline("StableDiffusionPipeline", sd_dir, safety_checker=None)
    weights = reference.text_encoder.state_dict()
    lora = load_file(sd_lora)
    for name, down in lora.items():
        if name.startswith("text_encoder.") and name.endswith(".down.weight"):
            up = lora[name.removesuffix("down.weight") + "up.weight"]
            target = name.removeprefix("text_encoder.").split(".lora")[0] + ".weight"
            weights[target] = weights[target] + 0.5 * up @ down
    reference.text_encoder.load_state_dict(weights)
    layers = list(range(6))
    lensed = sd_with_lora.encode(PROMPTS[1], layers)
    plain = sd_family.encode(PROMPTS[1], layers)
    tokens = reference.tokenizer(
        PROMPTS[1], padding="max_length", max_length=reference.tokenizer.model_max_length, return_tensors="pt"
    )
    with torch.no_grad():
        states = reference.text_encoder(tokens.input_ids, output_hidden_states=True).hidden_states
        norm = reference.text_encoder.final_layer_norm
        for layer in layers:
            torch.testing.assert_close(lensed[layer], norm(states[layer]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lensed[0], plain[0], rtol=0, atol=0)
    assert all(not torch.allclose(lensed[layer], plain[layer]) for layer in layers[1:])


def test_lora_scale_zero_is_no_lora(sd_dir, sd_lora, sd_family):
    family = load_family(load_options(sd_dir, lora=(LoraWeights(str(sd_lora), 0.0),)), None)
    items = [Item(0, 5, 2), Item(0, 1, 2)]
    got, _ = run_lens(family, PROMPTS[:1], items)
    want, _ = run_lens(sd_family, PROMPTS[:1], items)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_lora_on_a_family_without_a_loader_names_the_option(pixart_dir, sd_lora):
    with pytest.raises(
        CheckpointError,
        match=r"^the pixart family's PixArtAlphaPipeline has no LoRA loader in diffusers, so LoRA weights "
        r"cannot be loaded into it: leave --lora \(model\.lora\) out$",
    ):
        load_family(load_options(pixart_dir, lora=(LoraWeights(str(sd_lora)),)), None)


def test_lora_files_that_cannot_load_say_why(tmp_path, sd_dir, sd_lora):
    pickled = tmp_path / "pickled" / "style.bin"
    pickled.parent.mkdir()
    torch.save(load_file(sd_lora), pickled)
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.safetensors", "b.safetensors"):
        shutil.copy(sd_lora, two / name)
    cases = [
        (tmp_path / "missing.safetensors", r"^lora file not found: "),
        (pickled, r"^lora .*style\.bin holds pickled weights, and only safetensors load by default"),
        (two, r"^lora folder .*two holds several \(a\.safetensors, b\.safetensors\): pass one LoRA weight "),
    ]
    for path, message in cases:
        with pytest.raises(CheckpointError, match=message):
            load_family(load_options(sd_dir, lora=(LoraWeights(str(path)),)), None)
    # A folder with one weight file (what save_lora_weights writes) loads it; a pickle loads when allowed.
    assert load_family(load_options(sd_dir, lora=(LoraWeights(str(sd_lora.parent)),)), None).loras
    allowed = load_options(sd_dir, lora=(LoraWeights(str(pickled)),), allow_pickle=True)
    assert load_family(allowed, None).loras[0]["components"] == ["text_encoder", "unet"]
