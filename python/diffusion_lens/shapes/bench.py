"""The shapes benchmark: Diffusion Lens on a model whose truth is known.

    python -m diffusion_lens.shapes.bench [--model models/shapes] [--per-kind 32] [--seeds 4]

For held-out prompts (combinations never seen in training), every encoder layer x seed is generated
through the lens and scored from pixels by the ground-truth scorer. Each image's answers are written in
the paper's CSV layout, one file per question (``OUT/labels/shapes__<question>.csv``: prompt, a column
per layer, seed; 1 = right, 0 = wrong, empty = does not apply), and ``diffusion-lens stats`` computes
from them, as for any run, the per-layer accuracy with 95% bootstrap intervals (resampling prompts, then
seeds), the emergence layers, CSV tables and the SVG plots (``OUT/accuracy.csv``, ``OUT/accuracy.svg``).
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from ..devices import resolve_device, resolve_dtype
from ..families import LoadOptions, SamplerSettings, load_family
from ..generation import Item, LensOptions, generate
from ..scorers.shapes import QUESTIONS
from .scorer import score
from .world import Scene, all_scenes, is_heldout

REPO = Path(__file__).resolve().parents[3]
DEFAULT_MODEL = REPO / "models" / "shapes"
DEFAULT_OUT = REPO / "docs" / "shapes-bench"
CLI = REPO / "dist" / "cli.js"
# The model's name in the label files (`<model>__<question>.csv`).
MODEL_SLUG = "shapes"
# The scorer's attributes as question ids (the shapes scorer's, scorers/shapes.py), plus the model card's
# quality bar: colour and shape right on single-object prompts.
SINGLE_OBJECT = "single_object_correct"
QUESTION_OF = {"single_color_shape": SINGLE_OBJECT, **QUESTIONS}


# The results table's rows, in order: question id -> what it asks.
TABLE_ROWS: dict[str, str] = {
    SINGLE_OBJECT: "single-object prompts: colour + shape",
    "object_correct": "object colour + shape, all kinds",
    "colour_correct": "colour",
    "shape_correct": "shape",
    "size_correct": "size",
    "count_correct": "count (2 or 3)",
    "position_correct": "position (left/right/top/bottom/center)",
    "second_correct": "second object of a relation",
    "binding_correct": "two-colour binding",
    "relation_correct": "relation (above/below/left of/right of)",
}
# Where the table goes: between `<!-- shapes-bench:results -->` and `<!-- /shapes-bench:results -->`.
TABLE_FILES = (REPO / "README.md", DEFAULT_MODEL / "README.md")
MARKER = "shapes-bench:results"


def results_table(out: Path) -> str:
    """The benchmark's summary as a markdown table, from the files `stats` wrote to ``out``: accuracy at
    the token embeddings, every quarter of the encoder and the final layer (with its 95% interval), and
    the median emergence layer (with its 95% interval) of the prompts that emerge."""
    with open(out / "accuracy.csv", newline="") as handle:
        accuracy = {(row["question"], int(row["layer"])): row for row in csv.DictReader(handle)}
    with open(out / "emergence-summary.csv", newline="") as handle:
        emergence = {row["question"]: row for row in csv.DictReader(handle)}
    final = max(layer for _, layer in accuracy)
    shown = sorted({0, round(final / 4), round(final / 2), round(3 * final / 4)})
    header = [f"L{layer}" for layer in shown] + [f"L{final} [95% CI]", "emergence layer [95% CI] (prompts)"]
    lines = ["| attribute (question) | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for question, label in TABLE_ROWS.items():
        if (question, final) not in accuracy:
            continue
        cells = [f"{float(accuracy[(question, layer)]['accuracy']):.2f}" for layer in shown]
        last = accuracy[(question, final)]
        cells.append(
            f"**{float(last['accuracy']):.2f}** [{float(last['ci_low']):.2f}, {float(last['ci_high']):.2f}]"
        )
        e = emergence[question]
        if e["median_layer"] == "":
            cells.append(f"never (0 of {e['prompts']})")
        else:
            low, high = (float(e[k]) for k in ("median_low", "median_high"))
            cells.append(
                f"{float(e['median_layer']):g} [{low:g}, {high:g}] ({e['emerged']} of {e['prompts']})"
            )
        lines.append(f"| {label} (`{question}`) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_between_markers(path: Path, name: str, text: str) -> bool:
    """Replaces what lies between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``; False if absent."""
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
    content = path.read_text()
    if start not in content or end not in content:
        return False
    head, rest = content.split(start, 1)
    path.write_text(head + start + text + end + rest.split(end, 1)[1])
    return True


def heldout_scenes(per_kind: int, seed: int = 0) -> list[Scene]:
    by_kind: dict[str, list[Scene]] = defaultdict(list)
    for scene in all_scenes():
        if is_heldout(scene):
            by_kind[scene.kind].append(scene)
    rng = random.Random(seed)
    return [
        s for kind in sorted(by_kind) for s in rng.sample(by_kind[kind], min(per_kind, len(by_kind[kind])))
    ]


def write_labels(
    folder: Path,
    answers: dict[str, dict[tuple[int, int], dict[int, int]]],
    prompts: list[str],
    layers: list[int],
) -> list[Path]:
    """One paper-layout CSV per question: a row per (prompt, seed), a cell per layer (empty: not asked)."""
    if folder.exists():
        shutil.rmtree(folder)  # a smaller rerun must not leave an earlier run's files behind
    folder.mkdir(parents=True)
    files = []
    for question, by_image in answers.items():
        path = folder / f"{MODEL_SLUG}__{question}.csv"
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["prompt", *layers, "seed"])
            for prompt, seed in sorted(by_image):
                cells = by_image[(prompt, seed)]
                writer.writerow([prompts[prompt], *(cells.get(layer, "") for layer in layers), seed])
        files.append(path)
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument(
        "--per-kind", type=int, default=32, help="held-out prompts per scene kind (at most all of them)"
    )
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for CSV and SVG")
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

    # answers[question][(prompt, seed)][layer] = 1 (right) or 0 (wrong); absent where it does not apply
    answers: dict[str, dict[tuple[int, int], dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    started = time.perf_counter()

    def on_image(index: int, item: Item, stage: int, image: np.ndarray, elapsed_ms: float) -> None:
        scene = scenes[item.prompt]
        truth = score(scene, image)
        if scene.kind == "single":
            truth["single_color_shape"] = truth["color_shape"]
        for attribute, question in QUESTION_OF.items():
            if truth.get(attribute) is not None:
                answers[question][(item.prompt, item.seed)][item.layer] = int(bool(truth[attribute]))

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

    print(f"{len(items)} images in {seconds:.0f} s ({len(items) / seconds:.1f} images/s)")

    out = Path(args.out)
    labels = write_labels(out / "labels", answers, prompts, layers)
    print(f"wrote {len(labels)} label files to {out / 'labels'}")
    title = f"Shapes model, held-out prompts, {args.seeds} seeds, {args.steps} steps"
    stats = ["stats", "--annotations", str(out / "labels"), "--by", "question", "--out", str(out)]
    stats += ["--title", title]
    if not CLI.exists():
        print(f"{CLI} is missing: run `npm run build`, then `node dist/cli.js {' '.join(stats)}`")
        raise SystemExit(1)
    # The statistics and plots of every run: the same code as `diffusion-lens stats` on a run folder.
    subprocess.run(["node", str(CLI), *stats], check=True)
    (out / "labels.csv").unlink()  # every judgment again, in one file: labels/ holds them already
    table = results_table(out)
    print(table)
    # The docs show the committed model's figures, from the run whose files are in docs/shapes-bench.
    if Path(args.model).resolve() == DEFAULT_MODEL.resolve() and out.resolve() == DEFAULT_OUT.resolve():
        for path in TABLE_FILES:
            if write_between_markers(path, MARKER, table):
                print(f"wrote the table into {path}")


if __name__ == "__main__":
    main()
