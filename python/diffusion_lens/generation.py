"""The lens over a generate request: encode each prompt once, then sample every (prompt, layer, seed)
item in batches that share the UNet (``max_batch`` items, or as many as ``auto`` resolves: batching.py),
halving the batch on out-of-memory.

Family-independent: the family supplies the hidden-state conditioning (as its stock pipeline's arguments)
and runs the stock pipeline on a batch of it.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from .ablations import NO_ABLATION, Ablation, AblationError
from .batching import (
    AUTO,
    BatchSizer,
    CudaMemory,
    MaxBatch,
    SizeRecord,
    first_guess_bytes,
    records_of,
    size_key,
)
from .devices import empty_cache, is_out_of_memory, synchronize
from .families import STOCK_READOUT, Embeds, Family, Readout, SamplerSettings
from .families.acceleration import TILING_SIDE, VaeTiling, tiling_wanted
from .protocol import GUIDANCE_RANGE, range_problem
from .timings import SampleClock, Timings, ms_since


class Cancelled(Exception):
    """The request was cancelled by the orchestrator."""


class OutOfMemory(Exception):
    """Out of memory even with one item per batch."""


class BadRequest(ValueError):
    """A generate request that is well-formed but cannot be served (layer out of range, …)."""


@dataclass(frozen=True)
class Item:
    prompt: int
    layer: int
    seed: int


@dataclass(frozen=True)
class LensOptions:
    negative_prompt: str = ""
    uncond: str = "final"  # or "same-layer"
    noise: str = "shared"  # the initial noise of a (prompt, seed) at every layer, or "per-layer"
    # Items per denoiser batch, or "auto": resolved per request from the device (batching.py).
    max_batch: MaxBatch = AUTO
    # Which hidden states besides the layer: the sequence encoders that follow it, the pooled vector.
    readout: Readout = STOCK_READOUT
    # What is done to the prompt's conditioning before sampling: token positions, mix, injected embeds.
    ablation: Ablation = NO_ABLATION


@dataclass
class Progress:
    done_units: int
    total_units: int
    images_done: int
    images_total: int
    # Items in the batch being denoised: items[images_done : images_done + batch_items].
    batch_items: int = 0


# (item index, item, stage, image, milliseconds per item of its batch)
ImageCallback = Callable[[int, Item, int, np.ndarray, float], None]
ProgressCallback = Callable[[Progress], None]


def generator_seed(seed: int, layer: int, noise: str) -> int:
    """The generator seed of an item. ``shared``: the seed itself, so every layer of a (prompt, seed)
    starts from the stock pipeline's noise for that seed. ``per-layer``: fresh noise for each layer,
    derived from (seed, layer) so that it still does not depend on the batch."""
    if noise == "shared":
        return seed
    digest = hashlib.sha256(f"diffusion-lens/per-layer/{seed}/{layer}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def make_generators(
    chunk: Sequence[Item], settings: SamplerSettings, noise: str
) -> dict[int, list[torch.Generator]]:
    """One CPU generator per item and stage, made fresh on every attempt (a retry after out-of-memory
    must redraw the same noise). Stage II goes on with the item's stage-I generator, as one generator
    passed to both stock IF pipelines does, unless it has a fixed seed of its own."""
    stage1 = [
        torch.Generator(device="cpu").manual_seed(generator_seed(item.seed, item.layer, noise))
        for item in chunk
    ]
    generators = {1: stage1}
    if settings.stage2 is not None:
        seed = settings.stage2.seed
        generators[2] = (
            stage1 if seed is None else [torch.Generator(device="cpu").manual_seed(seed) for _ in chunk]
        )
    return generators


def validate(
    family: Family, prompts: Sequence[str], items: Sequence[Item], settings: SamplerSettings
) -> SamplerSettings:
    """``settings`` with the family's option defaults filled in, or BadRequest naming what is wrong."""
    last = family.num_layers
    for index, item in enumerate(items):
        if item.prompt >= len(prompts):
            raise BadRequest(
                f"items[{index}].prompt = {item.prompt} but only {len(prompts)} prompts were sent"
            )
        if item.layer > last:
            raise BadRequest(f"items[{index}].layer = {item.layer} is out of range 0..{last}")
        if item.seed >= 2**63:
            raise BadRequest(f"items[{index}].seed = {item.seed} does not fit a 64-bit generator seed")
    stages: dict[str, tuple[str, Any]] = {"": ("sample", settings)}
    if settings.stage2 is not None and not family.has_stage2:
        raise BadRequest("stage2 settings were sent but no stage II model is loaded")
    if settings.stage2 is not None:
        stages["stage2."] = ("stage2", settings.stage2)
        if settings.stage2.seed is not None and settings.stage2.seed >= 2**63:
            raise BadRequest(f"stage2.seed = {settings.stage2.seed} does not fit a 64-bit generator seed")
    for prefix, (kind, stage) in stages.items():
        # The protocol checks the guidance range too; library callers (bench.py, scripts) come straight here.
        problem = range_problem(f"{prefix}guidance", stage.guidance_scale, *GUIDANCE_RANGE)
        problem = problem or family.options_problem(kind, stage.family_options, f"{prefix}family_options")
        if problem is not None:
            raise BadRequest(problem)
        if stage.scheduler is not None and stage.scheduler not in family.schedulers:
            raise BadRequest(
                f"{prefix}scheduler: {stage.scheduler!r} is not a scheduler of the {family.name} family; "
                f"choose one of {', '.join(family.schedulers)}"
            )
    stage2 = settings.stage2
    if stage2 is not None:
        stage2 = replace(stage2, family_options=family.resolve_options("stage2", stage2.family_options))
    settings = replace(
        settings, stage2=stage2, family_options=family.resolve_options("sample", settings.family_options)
    )
    problem = family.problem_with(settings)
    if problem is not None:
        raise BadRequest(problem)
    return settings


def truncations(family: Family, prompts: Sequence[str], items: Sequence[Item]) -> list[dict[str, int]]:
    """The prompts of the request that the encoder cuts to its token limit (silently, as the stock pipelines
    do), so that the user can be told: tokenizing is cheap, the encoder does not run."""
    found = []
    for prompt in sorted({item.prompt for item in items}):
        tokens, limit = family.token_count(prompts[prompt])
        if tokens > limit:
            found.append({"prompt": prompt, "tokens": tokens, "max_tokens": limit})
    return found


def encode_all(
    family: Family, prompts: Sequence[str], items: Sequence[Item], options: LensOptions
) -> tuple[dict[tuple[int, int], Embeds], dict[int, Embeds]]:
    """Conditioning per (prompt, layer), ablated as ``options.ablation`` says, and unconditional
    conditioning per layer, each computed once."""
    layers_of: dict[int, set[int]] = {}
    for item in items:
        layers_of.setdefault(item.prompt, set()).add(item.layer)
    cond: dict[tuple[int, int], Embeds] = {}
    ablation = options.ablation
    for prompt, layers in layers_of.items():
        text, wanted = prompts[prompt], sorted(layers)
        states = family.conditioning(
            text, ablation.encoded_layers(wanted, family.stock_layer), options.readout
        )
        for layer, embeds in ablation.apply(family, text, states, wanted).items():
            cond[(prompt, layer)] = embeds
    if family.guidance == "distilled":  # no unconditional branch
        return cond, {}
    if options.uncond == "same-layer":
        uncond_layers = sorted({item.layer for item in items})
        uncond = family.unconditional(options.negative_prompt, uncond_layers, options.readout)
    else:
        stock = family.stock_layer
        final = family.unconditional(options.negative_prompt, [stock], options.readout)[stock]
        uncond = {item.layer: final for item in items}
    return cond, uncond


def lensed_tokens(
    family: Family, prompts: Sequence[str], items: Sequence[Item], ablation: Ablation
) -> list[dict[str, Any]]:
    """For a token ablation: per prompt of the items, the positions that follow the layer and their
    tokens (the done reply's ``lensed_tokens``)."""
    if ablation.tokens == "all":
        return []
    found = []
    for prompt in sorted({item.prompt for item in items}):
        tokens = family.tokens(prompts[prompt])
        positions = ablation.positions(tokens)
        found.append({"prompt": prompt, "positions": positions, "tokens": [tokens[i] for i in positions]})
    return found


def batch_embeds(per_item: Sequence[Embeds], prefix: str = "") -> Embeds:
    """The items' arguments concatenated along the batch, named ``prefix + name`` (the stock pipelines
    take the unconditional branch as ``negative_prompt_embeds``, ``negative_pooled_prompt_embeds``, …)."""
    return {prefix + name: torch.cat([embeds[name] for embeds in per_item]) for name in per_item[0]}


def generate(
    family: Family,
    prompts: Sequence[str],
    items: Sequence[Item],
    settings: SamplerSettings,
    options: LensOptions,
    on_image: ImageCallback,
    on_progress: ProgressCallback,
    is_cancelled: Callable[[], bool] = lambda: False,
) -> dict[str, Any]:
    """Make every item's images, calling ``on_image(index, item, stage, image, ms)`` as each batch
    finishes (stage I first, then stage II where there is one)."""
    settings = validate(family, prompts, items, settings)
    problem = family.readout_problem(options.readout)
    problem = problem or options.ablation.problem(family, [item.layer for item in items])
    if problem is not None:
        raise BadRequest(problem)
    if family.guidance == "distilled" and (options.negative_prompt or options.uncond != "final"):
        raise BadRequest(
            f"the {family.name} family is guidance-distilled: it has no unconditional branch, so no "
            "negative prompt and no uncond=same-layer"
        )
    started = time.perf_counter()
    timings = Timings()
    truncated = truncations(family, prompts, items)
    # Every prompt of the request is encoded before any sampling, so that an offloaded encoder visits the
    # device once per request.
    encoding = time.perf_counter()
    try:
        with family.encoding():
            cond, uncond = encode_all(family, prompts, items, options)
        synchronize(family.device)  # once per request: the encoding's own time, not the first batch's
    except AblationError as exc:
        raise BadRequest(str(exc)) from None
    timings.encode_ms = ms_since(encoding)
    steps = settings.steps_per_item
    progress = Progress(0, len(items) * steps, 0, len(items))
    sizer = batch_sizer(family, settings, items, options.max_batch)
    notices: list[str] = []
    pipelines = family.pipelines()
    wanted = tiling_wanted(family.device, settings.height, settings.width, family.acceleration)
    position = 0
    with VaeTiling(pipelines, wanted) as tiling:
        if tiling.on:
            notices.append(tiling_notice(settings, f"an image side of {TILING_SIDE} pixels or more"))
        while position < len(items):
            if is_cancelled():
                raise Cancelled()
            batch_size = sizer.next_size()
            chunk = list(range(position, min(position + batch_size, len(items))))
            clock = SampleClock(pipelines, family.device)
            try:
                with sizer.measuring(len(chunk)), clock:
                    images, elapsed_ms = _sample_chunk(
                        family,
                        [items[i] for i in chunk],
                        cond,
                        uncond,
                        settings,
                        options,
                        progress,
                        on_progress,
                        is_cancelled,
                    )
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                empty_cache(family.device.type)
                if len(chunk) > 1:
                    sizer.out_of_memory(batch_size, len(chunk))
                    continue
                if clock.decode_ran_out_of_memory and tiling.available:
                    tiling.enable()
                    family.acceleration.tiled_sizes.add((settings.height, settings.width))
                    notices.append(tiling_notice(settings, "decoding one image ran out of GPU memory"))
                    continue
                raise OutOfMemory(f"out of memory with a batch of one item ({exc})") from exc
            finally:
                clock.add_to(timings)
            for stage, stage_images in sorted(images.items()):
                for index, image in zip(chunk, stage_images, strict=True):
                    on_image(index, items[index], stage, image, elapsed_ms / len(chunk))
            progress.images_done += len(chunk)
            progress.done_units = progress.images_done * steps
            progress.batch_items = 0
            on_progress(progress)
            position += len(chunk)
    return {
        "images": len(items),
        "elapsed_ms": ms_since(started),
        "max_batch_used": sizer.limit,
        "truncated": truncated,
        "lensed_tokens": lensed_tokens(family, prompts, items, options.ablation),
        "timings": timings.as_dict(),
        "notices": notices,
    }


def batch_sizer(
    family: Family, settings: SamplerSettings, items: Sequence[Item], max_batch: MaxBatch
) -> BatchSizer:
    """How the request's batches are sized: ``max_batch`` as sent, or resolved as batching.py says
    (on CUDA with what this worker learnt of the model at this image size)."""
    stage2 = settings.stage2
    pixels = max(settings.height * settings.width, 0 if stage2 is None else stage2.height * stage2.width)
    if max_batch != AUTO or family.device.type != "cuda":
        return BatchSizer(max_batch, items, pixels)
    passes = 2 if family.guidance == "cfg" and settings.guidance_scale > 1 else 1
    sizes = (settings.height, settings.width, None if stage2 is None else (stage2.height, stage2.width))
    record = records_of(family).setdefault(size_key(*sizes, passes), SizeRecord())
    element_size = torch.empty((), dtype=family.pipe.dtype).element_size()
    return BatchSizer(
        max_batch,
        items,
        pixels,
        record=record,
        memory=CudaMemory(family.device),
        guess_bytes=first_guess_bytes(pixels, passes, element_size),
    )


def tiling_notice(settings: SamplerSettings, why: str) -> str:
    return (
        f"the VAE decodes {settings.height}x{settings.width} images in tiles ({why}): tiling changes pixels "
        "slightly against an untiled decode"
    )


def _sample_chunk(
    family: Family,
    chunk: list[Item],
    cond: dict[tuple[int, int], Embeds],
    uncond: dict[int, Embeds],
    settings: SamplerSettings,
    options: LensOptions,
    progress: Progress,
    on_progress: ProgressCallback,
    is_cancelled: Callable[[], bool],
) -> tuple[dict[int, np.ndarray], float]:
    started = time.perf_counter()
    generators = make_generators(chunk, settings, options.noise)
    embeds = batch_embeds([cond[(item.prompt, item.layer)] for item in chunk])
    if uncond:
        embeds |= batch_embeds([uncond[item.layer] for item in chunk], "negative_")
    base_units = progress.images_done * settings.steps_per_item
    progress.batch_items = len(chunk)

    def on_step(done: int, total: int) -> None:
        if is_cancelled():
            raise Cancelled()
        progress.done_units = base_units + (done * settings.steps_per_item // total) * len(chunk)
        on_progress(progress)

    images = family.sample(embeds.pop("prompt_embeds"), generators, settings, on_step, **embeds)
    return images, (time.perf_counter() - started) * 1000
