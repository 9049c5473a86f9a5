"""The Python API (diffusion_lens.lens on a loaded pipeline): the same images as the stock pipeline and as
the worker's path, the CLI's layer specs and folder layout, clear errors, an installable package, and the
README's notebook example run as written."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusion_lens
from diffusion_lens.families import CheckpointError, SamplerSettings
from diffusion_lens.generation import BadRequest, Item
from diffusion_lens.layer_spec import LayerSpecError, resolve_layers
from diffusion_lens.layout import image_path, images_csv, layer_depth, prompt_dir_name

from .conftest import lens_images, stock_settings_image

PYTHON_DIR = Path(__file__).resolve().parents[1]
README = PYTHON_DIR.parent / "README.md"
SETTINGS = SamplerSettings(num_inference_steps=4, guidance_scale=7.5, height=32, width=32, scheduler=None)
QUICK = {"steps": 4, "guidance": 7.5, "size": 32, "progress": False}


def test_the_final_layer_is_the_stock_pipeline(stock_sd) -> None:
    result = diffusion_lens.lens(stock_sd, "a red apple", layers="stock", seeds=[0, 3], **QUICK)
    assert result.layers == [5] and result.seeds == [0, 3] and result.family == "sd"
    for seed in (0, 3):
        expected = stock_settings_image(stock_sd, "a red apple", seed, SETTINGS)
        np.testing.assert_array_equal(np.asarray(result.images[5][seed]), expected)


def test_intermediate_layers_are_the_worker_path(stock_sd, sd_family) -> None:
    prompts = ["a red apple", "two blue cubes"]
    options = {"negative": "blurry", "uncond": "same-layer", "noise": "per-layer", "max_batch": 3}
    result = diffusion_lens.lens(stock_sd, prompts, layers=[2, 0], seeds=[1, 2], **options, **QUICK)
    items = [Item(p, layer, seed) for p in (0, 1) for layer in (2, 0) for seed in (1, 2)]
    # The worker's path with the same batches: a CPU convolution's rounding can depend on the batch size.
    expected = lens_images(
        sd_family,
        prompts,
        items,
        SETTINGS,
        negative_prompt="blurry",
        uncond="same-layer",
        noise="per-layer",
        max_batch=3,
    )
    for item, image in zip(items, expected, strict=True):
        np.testing.assert_array_equal(
            np.asarray(result.image(item.layer, item.seed, prompt=item.prompt)), image
        )
    assert [(p, layer, seed) for p, layer, seed, _ in result] == [(i.prompt, i.layer, i.seed) for i in items]


def test_embeddings_are_the_conditioning(stock_sd, sd_family) -> None:
    result = diffusion_lens.lens(stock_sd, "a red apple", layers="0:4:2", return_embeddings=True, **QUICK)
    assert sorted(result.embeddings) == [0, 2, 4]
    expected = sd_family.encode("a red apple", [0, 2, 4])
    for layer, embeds in result.embeddings.items():
        assert embeds["prompt_embeds"].device.type == "cpu"
        torch.testing.assert_close(embeds["prompt_embeds"], expected[layer].cpu(), rtol=0, atol=0)


def test_bad_arguments_raise_clear_errors(stock_sd) -> None:
    fake = type("KandinskyPipeline", (), {})()
    with pytest.raises(
        CheckpointError, match=r"KandinskyPipeline is not a pipeline .*StableDiffusionPipeline"
    ):
        diffusion_lens.lens(fake, "x")
    stage2 = type("IFSuperResolutionPipeline", (), {})()
    with pytest.raises(CheckpointError, match="stage I IFPipeline"):
        diffusion_lens.lens(stage2, "x")
    with pytest.raises(LayerSpecError, match=r"layer 9 is out of range 0\.\.5"):
        diffusion_lens.lens(stock_sd, "x", layers=9, **QUICK)
    with pytest.raises(LayerSpecError, match="layer 2 is listed 2 times"):
        diffusion_lens.lens(stock_sd, "x", layers="0:2,2", **QUICK)
    with pytest.raises(ValueError, match="uncond must be one of final, same-layer"):
        diffusion_lens.lens(stock_sd, "x", uncond="same", **QUICK)
    with pytest.raises(ValueError, match="seed -1"):
        diffusion_lens.lens(stock_sd, "x", seeds=[-1], **QUICK)
    with pytest.raises(BadRequest, match="no pooled text vector"):
        diffusion_lens.lens(stock_sd, "x", pooled="same-layer", **QUICK)
    with pytest.raises(BadRequest, match="scheduler"):
        diffusion_lens.lens(stock_sd, "x", scheduler="nope", **QUICK)
    result = diffusion_lens.lens(stock_sd, ["a", "b"], layers=-1, **QUICK)
    with pytest.raises(ValueError, match=r"2 prompts: use result\.images_for"):
        _ = result.images
    with pytest.raises(ValueError, match="return_embeddings=True"):
        _ = result.embeddings_for(0)


@pytest.mark.parametrize(
    ("spec", "num_layers", "stock", "expected"),
    # Pairs from the CLI's resolveLayers (src/config/layers.ts), run on the built dist/.
    [
        ("all", 5, None, [0, 1, 2, 3, 4, 5]),
        ("stock", 32, 31, [31]),
        (-1, 8, None, [8]),
        ([0, 4, 8], 8, None, [0, 4, 8]),
        ("0:8:4", 8, None, [0, 4, 8]),
        (":3", 8, None, [0, 1, 2, 3]),
        ("5:", 8, None, [5, 6, 7, 8]),
        ("-3:-1", 8, None, [6, 7, 8]),
        ("0%:100%:25%", 8, None, [0, 2, 4, 6, 8]),
        ("50%", 3, None, [2]),
        ("0%:100%", 3, None, [0, 1, 2, 3]),
        ("0,4,-1", 8, None, [0, 4, 8]),
        ("::3", 24, None, [0, 3, 6, 9, 12, 15, 18, 21, 24]),
        ("stock,0", 24, 23, [23, 0]),
        ("0%:100%:10%", 24, None, [0, 2, 5, 7, 10, 12, 14, 17, 19, 22, 24]),
    ],
)
def test_layer_specs_resolve_as_the_cli_does(spec, num_layers, stock, expected) -> None:
    assert resolve_layers(spec, num_layers, stock) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0:2,2", "layer 2 is listed 2 times"),
        (9, r"layer 9 is out of range 0\.\.8"),
        ("1:x", '"x" is not an integer'),
        ("3:1", r"range 3:1 is empty \(3 > 1\)"),
        ("", "the layer spec is empty"),
        ("0%:100%:25%,4", "layer 4 is listed 2 times"),
        ("-10", "-1 = 8, -9 = 0"),
        ("10%:5", "mixes layers and percentages"),
        ([], "the layer list is empty"),
    ],
)
def test_bad_layer_specs(spec, message) -> None:
    with pytest.raises(LayerSpecError, match=message):
        resolve_layers(spec, 8)


def test_paths_are_the_clis() -> None:
    # Pairs from the CLI's promptDirName and imagePath (src/experiment/store.ts), run on the built dist/.
    pairs = {
        "a red apple": "a-red-apple-c0c74b7a",
        "Crème Brûlée — “fancy”, 2 PLATES!": "creme-brulee-fancy-2-plates-51ef7e01",
        "???": "prompt-a03b221c",
        "two blue cubes on a table, with a very long description that goes on": (
            "two-blue-cubes-on-a-table-with-a-very-lo-52be7248"
        ),
        "東京タワー": "prompt-3d8ae54a",
        "naïve café": "naive-cafe-28e86ad8",
        "  leading and trailing  ": "leading-and-trailing-2ef763ca",
    }
    assert {prompt: prompt_dir_name(prompt) for prompt in pairs} == pairs
    assert image_path("a red apple", 3, 2, 24) == "images/a-red-apple-c0c74b7a/L03-s2.png"
    assert image_path("a red apple", 12, 0, 5) == "images/a-red-apple-c0c74b7a/L12-s0.png"
    assert image_path("x", 7, 1, 100, 2) == "images/x-2d711642/L007-s1-stage2.png"
    depths = [layer_depth(a, b) for a, b in [(1, 3), (2, 3), (1, 8), (1, 16), (3, 40), (5, 5), (0, 0)]]
    assert depths == [33.3, 66.7, 12.5, 6.3, 7.5, 100, 100]


def test_ablations_in_the_api(stock_sd, tmp_path: Path) -> None:
    """The notebook workflow of an embedding edit: keep a layer's conditioning, save it as an embeds file,
    inject it elsewhere; and each ablation in the settings (so the keys) only when set."""
    stock = diffusion_lens.lens(stock_sd, "a red apple", layers="stock", return_embeddings=True, **QUICK)
    path = diffusion_lens.save_embeds(tmp_path / "stock.safetensors", {"a red apple": stock.embeddings[5]})
    injected = diffusion_lens.lens(stock_sd, "a red apple", layers=0, embeds=path, **QUICK)
    np.testing.assert_array_equal(np.asarray(injected.images[0][0]), np.asarray(stock.images[5][0]))
    mixed = diffusion_lens.lens(stock_sd, "a red apple", mix=(1, -1, 0.5), tokens="prompt", **QUICK)
    assert mixed.layers == [1]
    lens_settings = mixed.run["settings"]["lens"]
    assert lens_settings == {
        "uncond": "final",
        "noise": "shared",
        "tokens": "prompt",
        "mix": {"layers": [1, 5], "alpha": 0.5},
    }
    assert "tokens" not in stock.run["settings"]["lens"] and "embeds" not in stock.run["settings"]["lens"]
    assert (
        injected.run["settings"]["lens"]["embeds"]["sha256"]
        == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    )
    with pytest.raises(ValueError, match=r"with mix, layers is \[1\]"):
        diffusion_lens.lens(stock_sd, "x", layers=3, mix={"layers": [1, 2], "alpha": 0.5}, **QUICK)
    with pytest.raises(ValueError, match="mix must be"):
        diffusion_lens.lens(stock_sd, "x", mix=[1, 2], **QUICK)


def test_save_writes_the_cli_layout(stock_sd, tmp_path: Path) -> None:
    prompt = 'a red apple, "ripe"'
    result = diffusion_lens.lens(stock_sd, prompt, layers="0,5", seeds=[0, 1], **QUICK)
    manifest_path = result.save(tmp_path / "run")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["complete"] is True and manifest["model"]["num_layers"] == 5
    assert [(i["layer"], i["seed"], i["depth"]) for i in manifest["images"]] == [
        (0, 0, 0),
        (0, 1, 0),
        (5, 0, 100),
        (5, 1, 100),
    ]
    for image in manifest["images"]:
        saved = np.asarray(__import__("PIL.Image").Image.open(tmp_path / "run" / image["path"]))
        np.testing.assert_array_equal(saved, np.asarray(result.image(image["layer"], image["seed"])))
        assert image["readout"]["encoders"][0]["hidden_state"] == image["layer"]
        assert re.fullmatch("[0-9a-f]{64}", image["key"])
    assert (tmp_path / "run" / manifest["grids"][0]["path"]).is_file()
    csv_text = (tmp_path / "run" / "images.csv").read_text()
    assert csv_text == images_csv(manifest)
    assert csv_text.splitlines()[1].startswith('"a red apple, ""ripe""",0,0,1,0,images/a-red-apple-ripe-')
    (tmp_path / "cli" / ".diffusion-lens").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="CLI manages"):
        result.save(tmp_path / "cli")


def test_the_pipeline_is_left_as_it_was(stock_sd) -> None:
    before = dict(stock_sd._progress_bar_config)
    diffusion_lens.lens(stock_sd, "a red apple", layers=-1, steps=1, size=32, progress=True)
    assert stock_sd._progress_bar_config == before
    assert stock_sd.safety_checker is None


def test_importing_the_package_leaves_torch_out() -> None:
    code = "import sys, diffusion_lens, diffusion_lens.server; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=PYTHON_DIR, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_pip_installs_the_package(tmp_path: Path) -> None:
    source = tmp_path / "src"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(
        PYTHON_DIR / "diffusion_lens", source / "diffusion_lens", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(PYTHON_DIR / "pyproject.toml", source)
    target = tmp_path / "site"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
            *("--no-deps", "--no-build-isolation", "--no-index", "--target", str(target), str(source)),
        ],
        check=True,
        capture_output=True,
    )
    code = (
        "import diffusion_lens, diffusion_lens.protocol as p; from diffusion_lens import lens, LensResult; "
        "print(diffusion_lens.__file__); print(p.SCHEMA['protocol']); print(lens.__module__)"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    where, protocol, module = out.stdout.split()
    assert Path(where).is_relative_to(target) and protocol == "1" and module == "diffusion_lens.api"
    metadata = next(target.glob("diffusion_lens-*.dist-info")) / "METADATA"
    assert "Requires-Dist: torch>=2.4" in metadata.read_text()


def test_the_readme_examples_run_as_written(tmp_path: Path) -> None:
    """The section's python blocks, one after the other (the embedding edit goes on with the first's
    ``pipe``), on the embedded shapes model (a StableDiffusionPipeline like the hub checkpoint), with few
    steps."""
    section = README.read_text().split("## Python API (notebooks)", 1)[1].split("\n## ", 1)[0]
    blocks = [
        textwrap.dedent(block)
        for _indent, block in re.findall(r"^( *)```python\n(.*?)^\1```", section, re.S | re.M)
    ]
    assert len(blocks) == 2, 'expected two python blocks under "## Python API (notebooks)" in the README'
    example = "\n".join(blocks)
    assert '"stable-diffusion-v1-5/stable-diffusion-v1-5"' in example
    shapes = PYTHON_DIR.parent / "models" / "shapes"
    script = example.replace('"stable-diffusion-v1-5/stable-diffusion-v1-5"', repr(str(shapes)))
    script = script.replace("seeds=[0, 1])", "seeds=[0, 1], steps=2, progress=False)")
    script = script.replace('layers="stock", ', 'layers="stock", steps=2, progress=False, ')
    assert script.count("steps=2") == 3
    script += "\nassert edited_result.layers == base.layers"
    env = {**os.environ, "PYTHONPATH": str(PYTHON_DIR)}
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, check=True, capture_output=True)
    manifest = json.loads((tmp_path / "runs" / "apple" / "manifest.json").read_text())
    assert len(manifest["images"]) == 13 * 2 and manifest["config"]["prompts"] == ["a red apple"]
    assert manifest["model"]["num_layers"] == 12
    assert (tmp_path / "apple-edit.safetensors").is_file()
