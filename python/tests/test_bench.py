"""bench.py, the lens against the official-style loop: it runs end to end and its JSON says what it
measured (docs/benchmarks.md is written from it)."""

from __future__ import annotations

import json

from diffusion_lens import bench
from diffusion_lens.batching import cpu_auto_batch


def test_a_case_writes_its_figures(tmp_path):
    out = tmp_path / "case.json"
    args = ["--layers", "3", "--seeds", "2", "--steps", "2", "--repeats", "1", "--compare-batch", "1"]
    bench.main([*args, "--json", str(out)])
    figures = json.loads(out.read_text())
    assert figures["images"] == 6 and figures["layers"] == [0, 2, 5]
    assert [row["run"] for row in figures["results"]] == [
        "lens, max_batch auto",
        "lens, max_batch 1",
        "official-style loop",
    ]
    loop = figures["results"][-1]
    assert loop["vs_loop"] == 1.0
    for row in figures["results"]:
        assert row["seconds"] > 0 and abs(row["images_per_s"] - 6 / row["seconds"]) < 1e-9
        assert abs(row["vs_loop"] - loop["seconds"] / row["seconds"]) < 1e-9
    # auto on this CPU: 32x32 images, so as many as fill 32768 pixels (capped by the 6 items)
    items = bench.sweep_items(figures["layers"], 2)
    assert figures["max_batch_used"] == cpu_auto_batch(items, 32 * 32) == 16
    assert figures["peak_rss_mb"] > 100 and figures["peak_cuda_mb"] is None


def test_the_loop_makes_the_lens_final_layer_images(tmp_path, monkeypatch):
    """The official-style loop is the stock pipeline per layer: at the final layer its images are the
    lens's (so the benchmark compares like with like)."""
    import numpy as np
    import torch

    from diffusion_lens.families import LoadOptions, SamplerSettings, load_family
    from diffusion_lens.fixtures import save_fixture
    from diffusion_lens.generation import LensOptions, generate

    family = load_family(
        LoadOptions(str(save_fixture("sd", tmp_path / "sd")), None, "cpu", torch.float32, "none", False), "sd"
    )
    settings = SamplerSettings(2, 7.5, 32, 32, None)
    last = family.num_layers
    captured: list[np.ndarray] = []
    real_call = family.pipe.__class__.__call__

    def call(pipe, *args, **kwargs):
        result = real_call(pipe, *args, **kwargs)
        captured.append(result.images)
        return result

    monkeypatch.setattr(family.pipe.__class__, "__call__", call)
    bench.official_loop(family, "a red apple", [last], 2, settings)
    monkeypatch.undo()
    lens: dict[int, np.ndarray] = {}
    generate(
        family,
        ["a red apple"],
        bench.sweep_items([last], 2),
        settings,
        LensOptions(),
        lambda index, item, stage, image, ms: lens.__setitem__(item.seed, image),
        lambda progress: None,
    )
    loop = (captured[0] * 255).round().astype("uint8")
    assert np.array_equal(loop[0], lens[0]) and np.array_equal(loop[1], lens[1])
