"""Benchmark: images/s of a layer-by-seed sweep through the lens against an official-style loop (one
stock pipeline call per layer, seeds batched, layers not), with the peak memory of the process.

    python -m diffusion_lens.bench [--model DIR] [--layers 5] [--seeds 4] [--steps 20] [--size 32]
                                   [--max-batch auto|N] [--compare-batch N ...] [--json FILE]
    python -m diffusion_lens.bench --family if [--model DIR --stage2-model DIR] [--stage2-steps 20]

Without --model it measures the tiny random-weight fixture of the family (built in a temporary folder);
for IF, both stages (an image is a stage-I and a stage-II image). `npm run bench` runs this for each CPU
case of docs/benchmarks.md (scripts/bench.mjs), one process per case so that the peak RSS is the case's.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from .devices import resolve_device, resolve_dtype
from .families import (
    CheckpointSource,
    Embeds,
    Family,
    LoadOptions,
    SamplerSettings,
    Stage2Settings,
    load_family,
)
from .fixtures import save_fixture
from .generation import Item, LensOptions, generate


def timed_together(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best wall time of each of ``runs`` over ``repeats`` rounds that run each once in turn (after one
    warm-up round): a shared machine's slow spells then fall on every run alike, not on one."""
    for run in runs.values():
        run()
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def batch_size(text: str) -> int | str:
    """A --max-batch argument: auto or a whole number of at least 1."""
    if text == "auto":
        return text
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be auto or an integer >= 1")
    return value


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def spread(layers: Sequence[int], count: int) -> list[int]:
    """``count`` of ``layers``, evenly spread, both ends included."""
    if count >= len(layers):
        return list(layers)
    last = len(layers) - 1
    return sorted({layers[round(i * last / max(count - 1, 1))] for i in range(count)})


def sweep_items(layers: Sequence[int], seeds: int) -> list[Item]:
    """Every (layer, seed) of one prompt, layer-major: the sweep both runs make."""
    return [Item(0, layer, seed) for layer in layers for seed in range(seeds)]


def lens_sweep(
    family: Family, prompt: str, items: Sequence[Item], settings: SamplerSettings, max_batch: int | str
) -> dict[str, Any]:
    """The lens over ``items``: one encoding of the prompt, items sampled ``max_batch`` (or as many as
    ``auto`` chooses) at a time. Returns generate's summary (``max_batch_used``, ``timings``)."""
    options = LensOptions(max_batch=max_batch)  # type: ignore[arg-type]
    return generate(family, [prompt], items, settings, options, lambda *a: None, lambda p: None)


def official_loop(
    family: Family, prompt: str, layers: Sequence[int], seeds: int, settings: SamplerSettings
) -> None:
    """The authors' way: one stock pipeline call per layer (the prompt encoded for it, seeds batched, the
    empty prompt's stock-layer conditioning as the negative where the family has one), stage II after
    stage I where there is one. Every conditioning argument the family gives is passed (SDXL and Flux
    need their pooled vector beside ``prompt_embeds``)."""

    def batched(embeds: Embeds, prefix: str = "") -> Embeds:
        return {prefix + name: t.repeat(seeds, *[1] * (t.dim() - 1)) for name, t in embeds.items()}

    negative: Embeds = {}
    if family.guidance == "cfg":
        stock = family.stock_layer
        negative = batched(family.unconditional("", [stock])[stock], "negative_")
    stage2 = settings.stage2
    for layer in layers:
        text = batched(family.conditioning(prompt, [layer])[layer]) | negative
        common = {
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "generator": [torch.Generator().manual_seed(s) for s in range(seeds)],
        }
        size = {"height": settings.height, "width": settings.width}
        if stage2 is None:
            family.pipe(**text, **common, **size, output_type="np")
            continue
        low = family.pipe(**text, **common, **size, output_type="pt").images
        family.stage2(  # type: ignore[attr-defined]
            image=low,
            **text,
            **{
                **common,
                "num_inference_steps": stage2.num_inference_steps,
                "guidance_scale": stage2.guidance_scale,
            },
            height=stage2.height,
            width=stage2.width,
            **stage2.family_options,
            output_type="np",
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", choices=("sd", "if"), default="sd")
    parser.add_argument("--model", help="hub id or local folder of a checkpoint (default: tiny fixture)")
    parser.add_argument("--stage2-model", help="IF: the stage II checkpoint (default: tiny fixture)")
    parser.add_argument("--stage2-steps", type=int, default=20, help="IF: stage II steps")
    parser.add_argument("--layers", type=int, default=5, help="number of layers, evenly spread over 0..L")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="image side (default: the model's native)")
    parser.add_argument(
        "--max-batch", type=batch_size, default="auto", help="the lens's max_batch (default: auto)"
    )
    parser.add_argument(
        "--compare-batch",
        type=batch_size,
        action="append",
        default=[],
        help="also time the lens with this max_batch (repeatable)",
    )
    parser.add_argument("--json", help="write the figures to this file (JSON)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (each run once per round)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dlens-bench-") as scratch:
        if args.model is None:
            args.model = str(save_fixture(args.family, Path(scratch) / f"tiny-{args.family}"))
        if args.family == "if" and args.stage2_model is None:
            args.stage2_model = str(save_fixture("if-sr", Path(scratch) / "tiny-if-sr"))
        run(args)


def run(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    stage2_source = CheckpointSource(args.stage2_model, None) if args.family == "if" else None
    family = load_family(
        LoadOptions(
            args.model,
            None,
            device,
            resolve_dtype(args.dtype, device),
            offload="none",
            allow_pickle=False,
            stage2=stage2_source,
        ),
        args.family,
    )
    last = family.num_layers
    layers = spread(range(last + 1), args.layers)
    described = family.describe()
    size = args.size or described["defaults"]["height"]
    stage2 = None
    if described.get("stage2"):
        side = described["stage2"]["defaults"]["height"]
        stage2 = Stage2Settings(args.stage2_steps, 4.0, side, side, None, None, {"noise_level": 250})
    settings = SamplerSettings(
        num_inference_steps=args.steps,
        guidance_scale=7.5,
        height=size,
        width=size,
        scheduler=None,
        stage2=stage2,
    )
    prompt = "a red apple on a wooden table"
    items = sweep_items(layers, args.seeds)

    def lens(max_batch: int) -> Callable[[], object]:
        return lambda: lens_sweep(family, prompt, items, settings, max_batch)

    def official_style() -> None:
        official_loop(family, prompt, layers, args.seeds, settings)

    n = len(items)
    print(f"model {args.model} on {device}: {len(layers)} layers {layers} x {args.seeds} seeds = {n} images,")
    stages = (
        f"then stage II {stage2.num_inference_steps} steps {stage2.height}x{stage2.width}, " if stage2 else ""
    )
    print(
        f"{args.steps} steps, {size}x{size}, {stages}"
        f"torch threads {torch.get_num_threads()}, best of {args.repeats}"
    )
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    used = lens_sweep(family, prompt, items, settings, args.max_batch)["max_batch_used"]
    runs = {f"lens, max_batch {args.max_batch}": lens(args.max_batch)}
    runs |= {f"lens, max_batch {b}": lens(b) for b in args.compare_batch if b != args.max_batch}
    runs["official-style loop"] = official_style
    seconds = timed_together(runs, args.repeats)
    baseline = seconds["official-style loop"]
    results = [
        {"run": name, "seconds": s, "images_per_s": n / s, "vs_loop": baseline / s}
        for name, s in seconds.items()
    ]
    for row in results:
        print(
            f"{row['run']:28s} {row['seconds']:8.3f} s {row['images_per_s']:8.2f} images/s "
            f"x{row['vs_loop']:5.2f} vs the loop"
        )
    peak_cuda = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    chose = f"max_batch auto sampled batches of {used}; " if args.max_batch == "auto" else ""
    print(f"{chose}peak RSS {peak_rss_mb():.0f} MiB")
    if args.json:
        figures = {
            "model": args.model,
            "family": args.family,
            "device": device,
            "dtype": str(family.pipe.unet.dtype).removeprefix("torch."),  # type: ignore[attr-defined]
            "torch_threads": torch.get_num_threads(),
            "layers": layers,
            "seeds": args.seeds,
            "images": n,
            "steps": args.steps,
            "size": size,
            "stage2": None
            if stage2 is None
            else {"steps": stage2.num_inference_steps, "size": stage2.height},
            "repeats": args.repeats,
            "max_batch": args.max_batch,
            "max_batch_used": used,
            "results": results,
            "peak_rss_mb": peak_rss_mb(),
            "peak_cuda_mb": peak_cuda,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
