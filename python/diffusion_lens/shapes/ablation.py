"""Ablations of the shapes model's training: short runs that each change one setting, scored at the final
encoder layer on held-out prompts by the ground-truth scorer.

    python -m diffusion_lens.shapes.ablation --work-dir DIR [--steps 1000] [--parallel 3] [--only NAME]
        [training settings, e.g. --batch 32: as `python -m diffusion_lens.shapes.train` takes them]

Every variant starts from the same seed and the same first stage (scenes, tokenizer, VAE, latents: built
once in DIR/shared, then linked into each variant's work dir) and differs from the others only in its
overrides of ``TrainConfig``. A variant is trained by ``diffusion_lens.shapes.train`` in its own process
(resumable: run the same command again after a stop), then scored; a variant already trained for --steps
is only scored. The table, with Wilson 95% intervals and the two figures of ``shapes.probe`` (how far
apart the encoder keeps the position words, and how far the UNet's first prediction leans with them), is
printed and written to DIR/ablation.md and DIR/ablation.csv.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from scipy.stats import binomtest

from .bench import heldout_scenes
from .probe import probe
from .scorer import Detection, detect, score_detections
from .train import (
    ADDED_AFTER_V2,
    UNET_STAGE_FIELDS,
    TrainConfig,
    build_dataset,
    build_parser,
    check_work_dir,
    config_of,
    encode_latents,
    load_or_build_tokenizer,
    train_vae,
)
from .world import POSITIONS, Scene, relation_holds

# Each variant names every setting the ablation varies (those added after v2), so a change of
# TrainConfig's defaults does not change what a variant means; each differs from an earlier one in one.
ABLATED = tuple(ADDED_AFTER_V2)
V2 = dict(ADDED_AFTER_V2)
ZERO_SNR = {"prediction_type": "v_prediction", "zero_terminal_snr": True}
VARIANTS: dict[str, dict[str, object]] = {
    "epsilon": V2,
    "v-prediction": {**V2, "prediction_type": "v_prediction"},
    "v-prediction-zero-snr": {**V2, **ZERO_SNR},
    "zero-snr-attention-4x4": {**V2, **ZERO_SNR, "bottom_attention": True},
    "zero-snr-down-to-2x2": {**V2, **ZERO_SNR, "unet_bottom": 2},
    "epsilon-down-to-2x2": {**V2, "unet_bottom": 2},
    "zero-snr-conv-in-31": {**V2, **ZERO_SNR, "unet_conv_in": 31},
    "epsilon-conv-in-31": {**V2, "unet_conv_in": 31},
    "zero-snr-attention-4x4-conv-in-31": {**V2, **ZERO_SNR, "unet_conv_in": 31, "bottom_attention": True},
    "epsilon-token-loss": {**V2, "token_loss": 0.1},
    "v-prediction-token-loss": {**V2, "prediction_type": "v_prediction", "token_loss": 0.1},
}


# The scorer's answers shown, in the benchmark's words, and two answers about layout alone (an early
# model draws blobs whose shapes the scorer cannot name yet, but whose places it can judge): whether the
# largest object moves when only the prompt's position word changes (same seed), and whether the objects
# of the relation's two colours stand in the relation.
COLUMNS: dict[str, str] = {
    "single_color_shape": "single: colour + shape",
    "position": "position",
    "moved": "moved by the position word",
    "count": "count",
    "second": "second object",
    "binding": "binding",
    "relation": "relation",
    "relation_by_colour": "relation of the two colours",
}
# The probe's figures in the table: position words apart in the encoder's final states, and the UNet's
# first prediction's lean with them (pixels; see shapes.probe).
PROBE_FIGURES = ("words_apart", "lean_x", "lean_y")
PROBE_HEADERS = ("position words apart", "lean x (px)", "lean y (px)")
# Written only by replacing (save_atomic), so hard links are safe; config.json is rewritten in place: copied.
SHARED_FILES = ("dataset.pt", "vae.pt", "latents.pt")


def log(message: str) -> None:
    print(f"[shapes-ablation {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_shared(work: Path, config: TrainConfig) -> Path:
    """Builds the first stage once (as `train` does) and returns its seed folder."""
    shared = work / "shared" / f"seed{config.seed}"
    shared.mkdir(parents=True, exist_ok=True)
    check_work_dir(shared, config)
    tokenizer = load_or_build_tokenizer(shared)
    dataset = build_dataset(config, tokenizer, shared / "dataset.pt")
    vae = train_vae(config, dataset["images"], shared)
    encode_latents(vae, dataset["images"], shared / "latents.pt")
    return shared


def link_shared(shared: Path, target: Path) -> None:
    """The shared first stage in a variant's work dir: hard links (copies across file systems)."""
    target.mkdir(parents=True, exist_ok=True)
    for name in SHARED_FILES:
        if not (target / name).exists():
            try:
                os.link(shared / name, target / name)
            except OSError:
                shutil.copy2(shared / name, target / name)
    if not (target / "config.json").exists():
        shutil.copy2(shared / "config.json", target / "config.json")
    if not (target / "tokenizer").exists():
        shutil.copytree(shared / "tokenizer", target / "tokenizer")


def flags(overrides: dict[str, object]) -> list[str]:
    out = []
    for field, value in overrides.items():
        flag = f"--{field.replace('_', '-')}"
        if isinstance(value, bool):
            out.append(flag if value else f"--no-{flag[2:]}")
        else:
            out += [flag, str(value)]
    return out


def trained_steps(model: Path) -> int:
    info = model / "training.json"
    return json.loads(info.read_text()).get("unet_steps_done", 0) if info.exists() else 0


def train_variants(work: Path, names: list[str], steps: int, parallel: int, training_args: list[str]) -> None:
    done = {name: trained_steps(work / name / "model") for name in names}
    for name, steps_done in done.items():
        if steps_done not in (0, steps):
            raise SystemExit(
                f"{name} in {work} was trained for {steps_done} steps: use another --work-dir for {steps}"
            )
    todo = [name for name in names if done[name] == 0]
    if not todo:
        return
    threads = max(1, (os.cpu_count() or 1) // parallel)
    # The package importable from any working directory, installed or not.
    package_parent = str(Path(__file__).resolve().parents[2])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])),
    }
    running: dict[str, subprocess.Popen] = {}
    pending = list(todo)
    log(f"training {', '.join(todo)} ({steps} UNet steps, {parallel} at a time, {threads} threads each)")
    last_report = time.monotonic()
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            command = [
                sys.executable, "-m", "diffusion_lens.shapes.train", "--work-dir", str(work / name),
                "--out", str(work / name / "model"), "--threads", str(threads), "--checkpoint-every", "100",
                *training_args, "--unet-steps", str(steps), *flags(VARIANTS[name]),
            ]  # fmt: skip
            handle = open(work / name / "train.log", "a")  # noqa: SIM115 (closed with the process)
            running[name] = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        time.sleep(1)
        report = time.monotonic() - last_report >= 60
        last_report = time.monotonic() if report else last_report
        for name, process in list(running.items()):
            if process.poll() is None:
                if report:
                    lines = (work / name / "train.log").read_text().strip().splitlines()
                    print(f"  {name}: {lines[-1] if lines else 'starting'}", flush=True)
                continue
            del running[name]
            if process.returncode != 0:
                raise SystemExit(f"{name}: training failed (see {work / name / 'train.log'})")
            log(f"{name}: trained")


def other_position(scene: Scene) -> Scene:
    """The same single-object scene at the next position (left -> right -> top -> bottom -> center)."""
    return replace(
        scene, position=POSITIONS[(POSITIONS.index(scene.position or "center") + 1) % len(POSITIONS)]
    )


def moved(image: Image.Image, other: Image.Image) -> bool:
    """Whether the largest object of ``other`` is elsewhere than that of ``image`` (by 1/16 of the side),
    or is drawn in only one of them."""
    found, found_other = detect(image), detect(other)
    if not found or not found_other:
        return bool(found) != bool(found_other)
    (x, y), (x_other, y_other) = found[0].center, found_other[0].center
    return max(abs(x - x_other), abs(y - y_other)) >= 1 / 16


def relation_by_colour(scene: Scene, detections: list[Detection]) -> bool:
    first, second = (next((d for d in detections if d.color == o.color), None) for o in scene.objects)
    if first is None or second is None:
        return False
    return relation_holds(scene.relation or "", first.center, second.center)


@torch.inference_mode()
def evaluate(model: Path, per_kind: int, seeds: int, steps: int, guidance: float) -> dict[str, list[int]]:
    """Per answer, [right, asked] over held-out prompts x seeds, at the final layer (the stock pipeline)."""
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    counts = {key: [0, 0] for key in COLUMNS}

    def images_of(scene: Scene) -> list[Image.Image]:
        generators = [torch.Generator().manual_seed(seed) for seed in range(seeds)]
        return pipe(
            [scene.prompt] * seeds, height=size, width=size, num_inference_steps=steps,
            guidance_scale=guidance, generator=generators,
        ).images  # fmt: skip

    for scene in heldout_scenes(per_kind):
        images = images_of(scene)
        others = images_of(other_position(scene)) if scene.kind == "single" else [None] * seeds
        for image, other in zip(images, others, strict=True):
            detections = detect(image)
            truth: dict[str, bool | None] = dict(score_detections(scene, detections))
            if scene.kind == "single":
                truth["single_color_shape"] = truth["color_shape"]
                truth["moved"] = moved(image, other)
            if scene.kind == "relation":
                truth["relation_by_colour"] = relation_by_colour(scene, detections)
            for key in COLUMNS:
                if truth.get(key) is not None:
                    counts[key][0] += int(bool(truth[key]))
                    counts[key][1] += 1
    return counts


def scores(variant: Path, per_kind: int, seeds: int) -> dict[str, Any]:
    """The variant's answers ("counts") and probe figures ("probe"), kept in its folder with what they were
    measured on (reused while the same)."""
    measured_on = {
        "unet_steps_done": trained_steps(variant / "model"), "per_kind": per_kind, "seeds": seeds,
        "answers": list(COLUMNS), "probe": list(PROBE_FIGURES),
    }  # fmt: skip
    kept = variant / "scores.json"
    if kept.exists():
        previous = json.loads(kept.read_text())
        if previous["measured_on"] == measured_on:
            return previous
    log(f"scoring {variant.name}")
    counts = evaluate(variant / "model", per_kind, seeds, steps=20, guidance=5.0)
    probed = probe(StableDiffusionPipeline.from_pretrained(variant / "model", safety_checker=None))
    figures = {"words_apart": probed.position_words_apart, "lean_x": probed.lean[0], "lean_y": probed.lean[1]}
    found = {"measured_on": measured_on, "counts": counts, "probe": figures}
    kept.write_text(json.dumps(found, indent=1) + "\n")
    return found


def cell(right: int, asked: int) -> str:
    interval = binomtest(right, asked).proportion_ci(method="wilson")
    return f"{right / asked:.2f} [{interval.low:.2f}, {interval.high:.2f}]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", required=True, help="variants' work dirs, models and the table")
    parser.add_argument("--steps", type=int, default=1000, help="UNet steps per variant")
    parser.add_argument("--parallel", type=int, default=3, help="variants trained at once")
    parser.add_argument("--only", action="append", choices=list(VARIANTS), help="a variant (repeatable)")
    parser.add_argument("--per-kind", type=int, default=48, help="held-out prompts per scene kind")
    parser.add_argument("--seeds", type=int, default=2)
    args, training_args = parser.parse_known_args(argv)
    config = config_of(build_parser().parse_args(training_args))
    work = Path(args.work_dir).expanduser()
    names = args.only or list(VARIANTS)

    shared = prepare_shared(work, config)
    for name in names:
        assert set(VARIANTS[name]) <= UNET_STAGE_FIELDS, f"{name} changes the first stage: cannot share it"
        link_shared(shared, work / name / f"seed{config.seed}")
    train_variants(work, names, args.steps, args.parallel, training_args)

    rows = []
    for name in names:
        rows.append((name, scores(work / name, args.per_kind, args.seeds)))
    header = ["variant", *(f"`{f}`" for f in ABLATED), *COLUMNS.values(), *PROBE_HEADERS]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for name, found in rows:
        settings = [str(VARIANTS[name][f]) for f in ABLATED]
        answers = [cell(*found["counts"][k]) for k in COLUMNS]
        figures = [f"{found['probe'][k]:.2f}" for k in PROBE_FIGURES]
        lines.append("| " + " | ".join([name, *settings, *answers, *figures]) + " |")
    title = (
        f"Shapes model ablation: {args.steps} UNet steps per variant, final layer, "
        f"{args.per_kind} held-out prompts per kind x {args.seeds} seeds, 20 steps, guidance 5"
    )
    table = f"{title}\n\n" + "\n".join(lines) + "\n"
    print(table)
    (work / "ablation.md").write_text(table)
    with open(work / "ablation.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["variant", "answer", "right", "asked"])
        for name, found in rows:
            writer.writerows([name, key, *found["counts"][key]] for key in COLUMNS)


if __name__ == "__main__":
    main()
