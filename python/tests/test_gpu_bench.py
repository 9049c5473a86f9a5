"""bench/gpu.sh's benchmark (diffusion_lens.gpu_bench) end to end at its small CPU size, for SD 2.1: both runs
timed, the images counted, and FLOP counts that check out against an independent count and the batch."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from diffusion_lens import gpu_bench
from diffusion_lens.families import SamplerSettings


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("gpu-bench") / "bench.json"
    returned = gpu_bench.main(["--scale", "small", "--models", "sd21", "--device", "cpu", "--out", str(out)])
    written = json.loads(out.read_text(encoding="utf-8"))
    assert written["models"] == json.loads(json.dumps(returned["models"]))
    return written


def test_the_small_sweep_runs_both_ways(report: dict[str, Any]) -> None:
    assert report["scale"] == "small"
    assert report["environment"]["gpu"] is None and report["environment"]["peak_tflops"] is None
    model = report["models"]["sd21"]
    assert model["status"] == "ok", model
    settings = model["settings"]
    # Every depth of SD 2.1's OpenCLIP-H kept at the small size: 23 layers, hidden states 0..23.
    assert settings["layers"] == [0, 23] and settings["seeds"] == 2
    assert settings["steps_timed"] == settings["steps_default"] == 2
    assert model["parameters"]["unet"] > 0 and model["notes"] == []
    for run in ("lens", "loop"):
        assert model[run]["images"] == 2 * 2
        assert model[run]["seconds"] > 0 and model[run]["images_per_s"] > 0
        assert model[run]["tflops_per_s"] > 0
        assert model[run]["mfu"] is None  # no GPU, no peak
        assert model[run]["peak_memory_bytes"] is None
    # Small runs are never cut to fit a time: the loop ran on every layer.
    assert model["loop"]["layers_timed"] == [0, 23] and model["loop"]["images_timed"] == 4
    assert model["loop"]["seconds"] == model["loop"]["seconds_timed"]
    expected = model["lens"]["images_per_s"] / model["loop"]["images_per_s"]
    assert model["ratio_lens_over_loop"] == pytest.approx(expected)
    assert model["syncs"] is None  # counted on CUDA only
    assert "| sd21 | 4 | 2/2 |" in gpu_bench.markdown(report)


def test_denoiser_flops_grow_with_the_batch(report: dict[str, Any]) -> None:
    flops = report["models"]["sd21"]["flops"]
    per_call = {int(items): value for items, value in flops["denoiser_per_call"].items()}
    # The lens's batch (all 4 items), the loop's (2 seeds) and one item; each denoiser call runs the
    # classifier-free pair, so the UNet's batch is twice the items.
    assert sorted(per_call) == [1, 2, 4]
    assert {int(n): b for n, b in flops["denoiser_call_batch"].items()} == {1: 2, 2: 4, 4: 8}
    for items, value in per_call.items():
        assert value == pytest.approx(items * per_call[1], rel=1e-9)
    assert flops["denoiser_per_image_step"] == pytest.approx(per_call[1])
    assert flops["denoiser_per_image"] == pytest.approx(2 * per_call[1])  # 2 steps
    text, vae, image = (
        flops["text_encoder_per_prompt"],
        flops["vae_decode_per_image"],
        flops["denoiser_per_image"],
    )
    assert text > 0 and vae > 0
    # The lens encodes the prompt and the negative once; the loop the prompt per layer (2), the negative once.
    assert flops["lens_total"] == pytest.approx(2 * text + 4 * (image + vae))
    assert flops["loop_total"] == pytest.approx(3 * text + 4 * (image + vae))
    lens = report["models"]["sd21"]["lens"]
    assert lens["tflops"] * 1e12 == pytest.approx(flops["lens_total"])


def test_denoiser_flops_match_a_count_of_the_weights(report: dict[str, Any]) -> None:
    """The benchmark's FLOPs of one item's UNet call against a count independent of torch's FLOP counter:
    2 x the multiply-adds of every convolution and linear layer, from their weights and output sizes
    (forward hooks), on the same inputs' shapes. The counter adds attention's two products (a few percent at
    8x8 latents), nothing else."""
    arch = gpu_bench.load_arch("sd21", "small")
    unet = gpu_bench.build_model(arch["components"]["unet"], None, "cpu", torch.float32)
    macs = 0

    def count(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        nonlocal macs
        weight = module.weight  # type: ignore[union-attr]
        per_output = weight[0].numel() if isinstance(module, torch.nn.Conv2d) else weight.shape[1]
        macs += output.numel() * per_output

    layers = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [layer.register_forward_hook(count) for layer in layers]
    side, width = unet.config.sample_size, unet.config.cross_attention_dim
    with torch.no_grad():  # one item under classifier-free guidance: a batch of 2, 77 tokens
        unet(torch.randn(2, 4, side, side), torch.tensor([500, 500]), torch.randn(2, 77, width))
    for handle in handles:
        handle.remove()
    counted = report["models"]["sd21"]["flops"]["denoiser_per_call"]["1"]
    assert 2 * macs < counted <= 1.5 * 2 * macs  # strictly more: attention is counted (on the CPU too)


def test_syncs_are_told_apart_per_step_and_per_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """count_syncs' bookkeeping, without CUDA: sync debug mode stands in as a warning from each UNet call
    (one per denoising step) and one more per pipeline call."""
    arch = gpu_bench.load_arch("sd21", "small")
    family = gpu_bench.build_family(arch, torch.device("cpu"), torch.float32)
    pipe = family.pipe
    state = {"mode": "default"}

    def warn_in_mode(*args: Any) -> None:
        if state["mode"] == "warn":
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=2)

    pipe.unet.register_forward_hook(warn_in_mode)  # once per denoising step
    original_decode = pipe.vae.decode

    def decode(*args: Any, **kwargs: Any) -> Any:  # once per pipeline call, whatever the steps
        warn_in_mode()
        return original_decode(*args, **kwargs)

    monkeypatch.setattr(pipe.vae, "decode", decode)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda mode: state.update(mode=mode))
    syncs = gpu_bench.count_syncs(family, SamplerSettings(2, 7.5, 64, 64, None))
    assert syncs["per_step"]["sync_warnings"] == 1
    assert syncs["per_call"]["sync_warnings"] == 1
    low, high = (str(steps) for steps in gpu_bench.SYNC_STEPS)
    assert syncs["runs"][high]["sync_warnings"] - syncs["runs"][low]["sync_warnings"] == 2
    assert syncs["runs"][high]["sites"][0][1] >= 4
    assert state["mode"] == "default"  # set back


def test_archs_are_complete() -> None:
    """Every model's JSON names its family, pipeline, defaults and each component's class and config; its
    small overrides name only components it has."""
    for name in gpu_bench.MODELS:
        path = Path(gpu_bench.ARCHS) / f"{name}.json"
        arch = json.loads(path.read_text(encoding="utf-8"))
        assert arch["name"] == name and arch["family"] in {"sd", "if", "sdxl", "flux"}
        assert set(arch["defaults"]) >= {"size", "steps", "guidance", "seeds"}
        assert all({"class", "config"} <= set(spec) for spec in arch["components"].values())
        assert set(arch["small"]["components"]) <= set(arch["components"])


def test_the_table_shows_what_a_gpu_run_adds(report: dict[str, Any]) -> None:
    """The markdown of a GPU run's figures (MFU, memory, syncs, steps cut to fit, a skipped model), which a
    CPU run leaves out."""
    gpu = copy.deepcopy(report)
    model = gpu["models"]["sd21"]
    model["lens"] |= {"mfu": 0.4123, "peak_memory_bytes": 3 * 2**30}
    model["loop"] |= {"mfu": 0.3, "peak_memory_bytes": 2 * 2**30}
    counts = {"sync_warnings": 3.0, "sync_calls": 1.0, "memcpy_HtoD": 0.0, "memcpy_DtoH": 1.0}
    model["syncs"] = {
        "per_step": counts,
        "per_call": counts,
        "runs": {str(gpu_bench.SYNC_STEPS[-1]): {"sites": [["scheduling_ddim.py:301", 4]]}},
    }
    model["at_default_steps"] = {
        "lens_images_per_s": 1.5,
        "loop_images_per_s": 1.0,
        "ratio_lens_over_loop": 1.5,
    }
    gpu["models"]["flux"] = {"status": "skipped", "reason": "time limit: too little time left for this model"}
    table = gpu_bench.markdown(gpu)
    row = next(line for line in table.splitlines() if line.startswith("| sd21 |"))
    assert row.count("|") == 14 and "| 0.41 |" in row and "| 0.30 |" in row
    assert "| 3.0/2.0 | 3 (1 calls) |" in row
    assert "sites: scheduling_ddim.py:301 x4" in table
    assert "loop 1.000 img/s, x1.50" in table
    skipped = next(line for line in table.splitlines() if line.startswith("| flux |"))
    assert skipped.count("|") == 14 and "skipped: time limit" in skipped


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA L4", 121.0),
    ],
)
def test_the_peak_is_the_gpus_dense_bf16_one(monkeypatch: pytest.MonkeyPatch, name: str, peak: float) -> None:
    monkeypatch.delenv(gpu_bench.PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    assert gpu_bench.peak_tflops(torch.device("cuda"))[0] == peak


def test_an_unknown_gpu_asks_for_its_peak(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu_bench.PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA GeForce RTX 4090")
    peak, source = gpu_bench.peak_tflops(torch.device("cuda"))
    assert peak is None and gpu_bench.PEAK_ENV in source
    monkeypatch.setenv(gpu_bench.PEAK_ENV, "165.2")
    assert gpu_bench.peak_tflops(torch.device("cuda")) == (165.2, f"${gpu_bench.PEAK_ENV}")
