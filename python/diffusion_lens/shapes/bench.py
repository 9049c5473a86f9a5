"""The shapes benchmark: Diffusion Lens on a model whose truth is known.

    python -m diffusion_lens.shapes.bench [--model models/shapes] [--per-kind 16] [--seeds 4]

For held-out prompts (combinations never seen in training), every encoder layer x seed is generated
through the lens and scored from pixels by the ground-truth scorer; per layer and attribute it reports
accuracy with a 95% bootstrap interval (resampling prompts), as CSV and an SVG plot.
"""

from __future__ import annotations

import argparse
import csv
import random
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device, resolve_dtype
from ..families import LoadOptions, SamplerSettings, load_family
from ..generation import Item, LensOptions, generate
from .plot import accuracy_svg
from .scorer import score
from .world import Scene, all_scenes, is_heldout

REPO = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = REPO / "models" / "shapes"
# Attribute → its name in the CSV and plot, in reading order.
ATTRIBUTES = {
    "single_color_shape": "single object (colour + shape)",
    "color_shape": "object (colour + shape)",
    "color": "colour",
    "shape": "shape",
    "size": "size",
    "position": "position",
    "count": "count",
    "second": "second object",
    "binding": "two-colour binding",
    "relation": "relation",
}


def heldout_scenes(per_kind: int, seed: int = 0) -> list[Scene]:
    by_kind: dict[str, list[Scene]] = defaultdict(list)
    for scene in all_scenes():
        if is_heldout(scene):
            by_kind[scene.kind].append(scene)
    rng = random.Random(seed)
    return [
        s for kind in sorted(by_kind) for s in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))
    ]


def bootstrap(per_prompt: list[list[float]], rounds: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean accuracy over images, and a 95% percentile interval from resampling prompts (an image's seeds
    share its prompt, so prompts are the independent units)."""
    rng = np.random.default_rng(seed)
    sums = np.array([sum(v) for v in per_prompt])
    counts = np.array([len(v) for v in per_prompt])
    mean = sums.sum() / counts.sum()
    picks = rng.integers(0, len(per_prompt), size=(rounds, len(per_prompt)))
    resampled = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(mean), float(low), float(high)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--per-kind", type=int, default=16, help="held-out prompts per scene kind")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(REPO / "docs" / "shapes-bench"), help="folder for CSV and SVG")
    args = parser.parse_args(argv)

    device = resolve_device(args.device)
    family = load_family(
        LoadOptions(
            args.model, None, device, resolve_dtype("fp32", device), offload="none", allow_pickle=False
        ),
        None,
    )
    scenes = heldout_scenes(args.per_kind)
    prompts = [scene.prompt for scene in scenes]
    layers = list(range(family.num_layers + 1))
    items = [
        Item(p, layer, seed) for p in range(len(scenes)) for layer in layers for seed in range(args.seeds)
    ]
    size = family.describe()["defaults"]["height"]
    settings = SamplerSettings(args.steps, args.guidance, size, size, None)
    print(f"{len(scenes)} held-out prompts x {len(layers)} layers x {args.seeds} seeds = {len(items)} images")

    # results[attribute][layer][prompt] = list of 0/1 over seeds
    results: dict[str, dict[int, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    started = time.perf_counter()

    def on_image(index: int, item: Item, stage: int, image: np.ndarray, elapsed_ms: float) -> None:
        scene = scenes[item.prompt]
        answers = score(scene, image)
        if scene.kind == "single":  # the model card's quality bar
            answers["single_color_shape"] = answers["color_shape"]
        for attribute, correct in answers.items():
            if correct is not None and attribute in ATTRIBUTES:
                results[attribute][item.layer][item.prompt].append(float(correct))

    def on_progress(progress) -> None:
        if (
            progress.images_done
            and progress.done_units == progress.images_done * settings.num_inference_steps
        ):
            print(f"  {progress.images_done}/{progress.images_total} images", flush=True)

    with torch.inference_mode():
        generate(
            family, prompts, items, settings, LensOptions(max_batch=args.max_batch), on_image, on_progress
        )
    seconds = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    series: dict[str, list[tuple[int, float, float, float]]] = {}
    with open(out / "accuracy.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["attribute", "layer", "images", "accuracy", "ci_low", "ci_high"])
        for attribute, label in ATTRIBUTES.items():
            if attribute not in results:
                continue
            for layer in layers:
                per_prompt = list(results[attribute][layer].values())
                mean, low, high = bootstrap(per_prompt)
                writer.writerow(
                    [attribute, layer, sum(map(len, per_prompt)), f"{mean:.4f}", f"{low:.4f}", f"{high:.4f}"]
                )
                series.setdefault(label, []).append((layer, mean, low, high))
    title = f"Diffusion Lens on the shapes model: held-out prompts, {args.seeds} seeds, {args.steps} steps"
    (out / "accuracy.svg").write_text(accuracy_svg(series, title))

    print(f"{len(items)} images in {seconds:.0f} s ({len(items) / seconds:.1f} images/s)")
    print("attribute".ljust(32) + "".join(f"L{layer:<6}" for layer in layers))
    for label, points in series.items():
        print(label.ljust(32) + "".join(f"{mean:<7.2f}" for _, mean, _, _ in points))
    print(f"wrote {out / 'accuracy.csv'} and {out / 'accuracy.svg'}")


if __name__ == "__main__":
    main()
