"""Benchmark: images/s of a layer-by-seed sweep through the lens, batched and unbatched, against an
official-style loop (one stock pipeline call per layer, seeds batched, layers not).

    python -m diffusion_lens.bench [--model DIR] [--layers 5] [--seeds 4] [--steps 20] [--size 32]
    python -m diffusion_lens.bench --family if [--model DIR --stage2-model DIR] [--stage2-steps 20]

Without --model it measures the tiny random-weight fixture of the family (built in a temporary folder);
for IF, both stages (an image is a stage-I and a stage-II image).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .devices import resolve_device, resolve_dtype
from .families import CheckpointSource, Family, LoadOptions, SamplerSettings, Stage2Settings, load_family
from .fixtures import save_fixture
from .generation import Item, LensOptions, generate


def timed(run: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs (after one warm-up run)."""
    run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def sweep_items(layers: Sequence[int], seeds: int) -> list[Item]:
    """Every (layer, seed) of one prompt, layer-major: the sweep both runs make."""
    return [Item(0, layer, seed) for layer in layers for seed in range(seeds)]


def lens_sweep(
    family: Family, prompt: str, items: Sequence[Item], settings: SamplerSettings, max_batch: int
) -> None:
    """The lens over ``items``: one encoding of the prompt, items sampled ``max_batch`` at a time."""
    options = LensOptions(max_batch=max_batch)
    generate(family, [prompt], items, settings, options, lambda *a: None, lambda p: None)


def official_loop(
    family: Family, prompt: str, layers: Sequence[int], seeds: int, settings: SamplerSettings
) -> None:
    """The authors' way: one stock pipeline call per layer (the prompt encoded for it, seeds batched,
    the final layer's empty prompt as the negative), stage II after stage I where there is one."""
    pipe = family.pipe  # type: ignore[attr-defined]
    last = family.num_layers
    negative = family.encode("", [last])[last].repeat(seeds, 1, 1)
    stage2 = settings.stage2
    for layer in layers:
        embeds = family.encode(prompt, [layer])[layer].repeat(seeds, 1, 1)
        generators = [torch.Generator().manual_seed(s) for s in range(seeds)]
        text = {"prompt_embeds": embeds, "negative_prompt_embeds": negative}
        common = {
            "num_inference_steps": settings.num_inference_steps,
            "guidance_scale": settings.guidance_scale,
            "generator": generators,
        }
        size = {"height": settings.height, "width": settings.width}
        if stage2 is None:
            pipe(**text, **common, **size, output_type="np")
            continue
        low = pipe(**text, **common, **size, output_type="pt").images
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
    parser.add_argument("--max-batch", type=int, default=8, help="the batched run's max_batch")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
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
    layers = sorted({round(i * last / max(args.layers - 1, 1)) for i in range(args.layers)})
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
    results = {
        f"lens, max_batch {args.max_batch}": timed(lens(args.max_batch), args.repeats),
        "lens, max_batch 1": timed(lens(1), args.repeats),
        "official-style loop (per layer, seeds batched)": timed(official_style, args.repeats),
    }
    baseline = results["official-style loop (per layer, seeds batched)"]
    for name, seconds in results.items():
        print(
            f"{name:48s} {seconds:8.3f} s {n / seconds:8.2f} images/s x{baseline / seconds:5.2f} vs official"
        )


if __name__ == "__main__":
    main()
