"""The shapes model's training script at a tiny size: it exports a pipeline stock diffusers loads, a run
stopped part-way and run again ends with the weights of an uninterrupted run, and a work dir refuses
settings its cached stages were not made with."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from diffusion_lens.shapes import model, render, train
from diffusion_lens.shapes.model import TEXT_LAYERS

# v2's values of the settings added after it, spelled out (the defaults may move on).
V2_SETTINGS = [
    "--token-loss",
    "0",
    "--no-zero-terminal-snr",
    "--unet-bottom",
    "4",
    "--unet-conv-in",
    "3",
    "--prediction-type",
    "epsilon",
]
TINY = ["--dataset-size", "32", "--vae-steps", "2", "--unet-steps", "4", "--batch", "4", "--threads", "1"]


@pytest.fixture(autouse=True)
def keep_torch_threads():
    # train.main sets the process's torch threads (--threads 1): later tests must not inherit that.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(out: Path, work: Path, *extra: str) -> None:
    train.main(["--out", str(out), "--work-dir", str(work), *TINY, *extra])


def weights(out: Path) -> dict[str, torch.Tensor]:
    return {
        f"{part}.{name}": tensor
        for part in ("text_encoder", "unet")
        for name, tensor in load_file(next((out / part).glob("*.safetensors"))).items()
    }


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("straight")
    run(root / "model", root / "work")
    return root


def test_it_exports_a_pipeline_that_stock_diffusers_loads(straight):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(straight / "model"))
    assert pipe.text_encoder.config.num_hidden_layers == TEXT_LAYERS
    # The exported tokenizer is the one the scenes were tokenised with, kept in the work dir.
    kept = train.CLIPTokenizer.from_pretrained(straight / "work" / "seed0" / "tokenizer")
    assert pipe.tokenizer.get_vocab() == kept.get_vocab()


def test_a_stopped_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch, straight):
    ticking_clock(monkeypatch)  # the UNet stage stops after its 2nd step
    run(tmp_path / "model", tmp_path / "work", "--minutes", str(4 / 60))
    assert torch.load(tmp_path / "work" / "seed0" / "unet.pt")["step"] == 2
    monkeypatch.undo()
    run(tmp_path / "model", tmp_path / "work")
    stopped, uninterrupted = weights(tmp_path / "model"), weights(straight / "model")
    assert stopped.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(stopped[name], tensor, rtol=0, atol=0, msg=name)


def test_a_work_dir_refuses_other_settings_for_stages_it_has_made(straight, tmp_path, monkeypatch):
    work = straight / "work"
    with pytest.raises(SystemExit, match="other unet_lr"):  # the UNet stage has run
        run(tmp_path / "model", work, "--unet-lr", "1e-4")
    with pytest.raises(SystemExit, match="other dataset_size"):
        run(tmp_path / "model", work, "--dataset-size", "16")
    # Stopped before the UNet stage's first step: its settings may still change, the VAE is kept.
    ticking_clock(monkeypatch)
    run(tmp_path / "early", tmp_path / "work", "--minutes", str(1 / 60))
    assert not (tmp_path / "work" / "seed0" / "unet.pt").exists()
    vae = (tmp_path / "work" / "seed0" / "vae.pt").stat().st_mtime_ns
    run(tmp_path / "early", tmp_path / "work", "--minutes", str(1 / 60), "--unet-lr", "1e-4")
    assert (tmp_path / "work" / "seed0" / "vae.pt").stat().st_mtime_ns == vae


def test_a_work_dir_refuses_scenes_rendered_under_other_layout_rules(straight, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(straight / "work", work)
    recorded = json.loads((work / "seed0" / "config.json").read_text())
    assert recorded["layout_rules"] == render.layout_rules(model.IMAGE_SIZE)
    del recorded["layout_rules"]  # recorded before the rules were: version 5's 2 px gaps
    (work / "seed0" / "config.json").write_text(json.dumps(recorded))
    with pytest.raises(SystemExit, match=r"other layout rules \(min_gap\)"):
        run(tmp_path / "model", work)


def test_a_work_dir_from_before_the_v3_settings_resumes_with_v2s_values(tmp_path):
    work = tmp_path / "work"
    run(tmp_path / "model", work, *V2_SETTINGS)  # as v2 trained, then recorded as v2 recorded it:
    recorded = json.loads((work / "seed0" / "config.json").read_text())
    for field in train.ADDED_AFTER_V2:
        del recorded[field]
    (work / "seed0" / "config.json").write_text(json.dumps(recorded))
    run(tmp_path / "model", work, *V2_SETTINGS)  # the UNet stage has run: accepted, as the same settings
    with pytest.raises(SystemExit, match="other prediction_type"):
        run(tmp_path / "model", work, *V2_SETTINGS[:-2], "--prediction-type", "v_prediction")


def ticking_clock(monkeypatch) -> None:
    """A clock that ticks once per reading: under --minutes N/60 the UNet stage reads it N times (once at
    the start, twice a step), then checkpoints and exports."""
    ticks = iter(range(10**6))
    clock = SimpleNamespace(
        strftime=time.strftime, perf_counter=time.perf_counter, monotonic=lambda: next(ticks)
    )
    monkeypatch.setattr(train, "time", clock)


@pytest.mark.parametrize("prediction_type, zero_snr", [("epsilon", False), ("v_prediction", True)])
def test_loss_weights_are_the_stated_weights_on_the_clean_latents_error(prediction_type, zero_snr):
    """The weighted squared error of a prediction equals the documented weight times the squared error of
    the clean latents diffusers' own scheduler step infers from that prediction."""
    from diffusers import DDPMScheduler

    scheduler = model.training_scheduler(prediction_type, zero_snr)
    stepper = DDPMScheduler.from_config(scheduler.config, clip_sample=False)
    generator = torch.Generator().manual_seed(0)
    clean, noise, error = (torch.randn(1, 4, 8, 8, generator=generator) for _ in range(3))
    for t in (0, 250, 700, 999):
        timesteps = torch.tensor([t])
        noisy = scheduler.add_noise(clean, noise, timesteps)
        target = scheduler.get_velocity(clean, noise, timesteps) if zero_snr else noise
        inferred = stepper.step(target + 0.1 * error, t, noisy).pred_original_sample
        snr = float(scheduler.alphas_cumprod[t] / (1 - scheduler.alphas_cumprod[t]))
        stated = max(min(snr, 5.0), 1.0) if zero_snr else min(snr, 5.0)
        weight = float(train.loss_weights(scheduler, timesteps, 5.0, prediction_type)[0])
        loss = weight * (0.1 * error).pow(2).mean().item()
        assert loss == pytest.approx(stated * (inferred - clean).pow(2).mean().item(), rel=1e-3), t
    if zero_snr:
        assert float(scheduler.alphas_cumprod[999]) == 0.0  # the last timestep is pure noise


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--zero-terminal-snr", "--prediction-type", "epsilon"],
            "zero_terminal_snr needs prediction_type v_prediction",
        ),
        (["--unet-conv-in", "4"], "unet_conv_in: 4 is not an odd kernel size from 1 to 31"),
        (["--unet-bottom", "8"], "unet_bottom: 8 is not 4 or 2"),
        (["--token-loss", "-1"], "token_loss: -1.0 is not a weight >= 0"),
        pytest.param(
            ["--device", "cuda"],
            "--device: device 'cuda' requested but torch.cuda.is_available() is False",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU"),
        ),
    ],
)
def test_bad_settings_are_refused_before_any_work(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit):
        run(tmp_path / "model", tmp_path / "work", *flags)
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_learning_rates_warm_up_linearly_then_decay_to_a_tenth():
    assert train.learning_rate(1.0, 0, 1000, warmup=10) == pytest.approx(0.1)
    assert train.learning_rate(1.0, 9, 1000, warmup=10) == pytest.approx(1.0, abs=1e-3)
    assert train.learning_rate(2.0, 500, 1000) == pytest.approx(1.1)  # halfway: 55% of the base
    assert train.learning_rate(2.0, 1000, 1000) == pytest.approx(0.2)
    assert train.learning_rate(2.0, 5000, 1000) == pytest.approx(0.2)  # stays there past the end
