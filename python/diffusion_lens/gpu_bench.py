"""GPU benchmark of the lens at full model size, with random weights: images/s of the lens sweep (every layer
x 4 seeds, items batched across layers) against the official-style loop (one stock pipeline call per layer,
seeds batched), denoiser FLOPs, achieved TFLOP/s and MFU, peak memory, and the host-device syncs of one
denoising loop.

    bench/gpu.sh [--models sd21,if,sdxl,flux] [--out bench-gpu.json]     # a GPU machine, one call, < 8 min
    bench/gpu.sh --small                                                 # the same code on CPU, small widths
    cd python && PYTHONPATH=. python -m diffusion_lens.gpu_bench --scale small --models sd21

The architectures are written in bench/archs/*.json (each component's diffusers / transformers config, from
the published checkpoints; nothing is downloaded). Weights are initialised directly on the device in bf16;
tokenizers are the fixtures' offline ones (their token ids stay below the real vocabularies). The models
are wrapped in the project's Family classes and driven by bench.py's ``lens_sweep`` and ``official_loop``.

To fit one call of a few minutes, the full-size run plans each model's timed work from a calibration: the
lens always covers every layer x seed, but with fewer denoising steps than the model's default when the
default would not fit (the loop then runs the same steps, so their ratio stays fair; figures at the default
steps are also given, scaled by FLOPs); the loop is timed on an evenly spread subset of layers and scaled
to all of them (the loop's time is one pipeline call per layer). The output says where it did either.
``--no-adapt`` runs the default steps and every layer whatever it takes.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import math
import os
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .bench import batch_size, lens_sweep, official_loop, spread, sweep_items
from .clip_tokenizer import CLIP_EOS, clip_tokenizer
from .devices import library_versions, synchronize
from .families import FAMILIES, Family, LoadOptions, SamplerSettings
from .families.acceleration import accelerate, denoiser_of
from .families.deepfloyd_if import DeepFloydIFFamily
from .fixtures import t5_tokenizer

ROOT = Path(__file__).resolve().parents[2]
ARCHS = ROOT / "bench" / "archs"
MODELS = ("sd21", "if", "sdxl", "flux")
PROMPT = "a red apple on a wooden table"
# Each model's share of the time limit: the two models (SD 2.1, IF) first and largest.
WEIGHTS = {"sd21": 1.3, "if": 1.5, "sdxl": 0.8, "flux": 0.8}
# Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, by a substring of the device name; first match wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("A100", 312.0),
    ("L4", 121.0),
)
PEAK_ENV = "DLENS_PEAK_TFLOPS"
# The loop's batch (the seeds) is half the lens's: assume it runs this much slower per FLOP when planning.
LOOP_SLOWDOWN = 1.25
CALIBRATION_STEPS = 2
SYNC_STEPS = (2, 4)
MIN_MODEL_SECONDS = 30.0
# Components given no weights: the checkers and image encoders the stock pipelines take as optional.
NONE_COMPONENTS = ("safety_checker", "feature_extractor", "watermarker", "image_encoder")

STARTED_ENV = "DLENS_BENCH_STARTED"  # epoch seconds when bench/gpu.sh started: its pip and imports count too
_started = time.monotonic() - max(0.0, time.time() - float(os.environ.get(STARTED_ENV) or time.time()))


def log(message: str) -> None:
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- building


def load_arch(name: str, scale: str, archs: Path = ARCHS) -> dict[str, Any]:
    """bench/archs/NAME.json, with its ``small`` overrides applied for the small scale."""
    arch = json.loads((archs / f"{name}.json").read_text(encoding="utf-8"))
    if scale == "small":
        small = arch["small"]
        arch["defaults"] = {**arch["defaults"], **small.get("defaults", {})}
        for component, overrides in small.get("components", {}).items():
            arch["components"][component]["config"].update(overrides)
        arch["family_options"] = {**arch.get("family_options", {}), **small.get("family_options", {})}
    return arch


def component_class(name: str) -> type:
    import diffusers
    import transformers

    for module in (diffusers, transformers):
        found = getattr(module, name, None)
        if isinstance(found, type):
            return found
    raise ValueError(f"{name} is neither a diffusers nor a transformers class")


def build_tokenizer(spec: dict[str, Any]) -> Any:
    if spec["kind"] == "clip":
        return clip_tokenizer(pad_token=spec.get("pad_token", CLIP_EOS))
    if spec["kind"] == "t5":
        return t5_tokenizer()
    raise ValueError(f"unknown tokenizer kind {spec['kind']!r}")


@contextmanager
def creating_on(device: torch.device | str, dtype: torch.dtype) -> Iterator[None]:
    """New tensors are made on ``device`` in ``dtype``: billions of weights initialised where they run, in the
    dtype they run in (made on the CPU in fp32 and moved, a 5B model takes minutes and twice the memory)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(previous)


def build_model(spec: dict[str, Any], tokenizer: Any, device: torch.device | str, dtype: torch.dtype) -> Any:
    """One model component with random weights, from its config."""
    from transformers import PreTrainedModel

    cls = component_class(spec["class"])
    config = dict(spec["config"])
    if "clip" in spec["class"].lower() and tokenizer is not None:
        # CLIP pools at the end-of-text token, found by its id: the offline tokenizer's ids.
        config |= {
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        }
    with creating_on(device, dtype):
        model = cls(cls.config_class(**config)) if issubclass(cls, PreTrainedModel) else cls(**config)
    wanted = torch.device(device)
    if any(p.dtype != dtype or p.device.type != wanted.type for p in model.parameters()):
        model.to(device=wanted, dtype=dtype)  # a class that ignored the defaults (none seen so far)
    return model.eval().requires_grad_(False)


def build_models(arch: dict[str, Any], device: torch.device | str, dtype: torch.dtype) -> dict[str, Any]:
    """The arch's tokenizers, scheduler and models (random weights) by pipeline component name."""
    tokenizers = {name: build_tokenizer(spec) for name, spec in arch.get("tokenizers", {}).items()}
    parts: dict[str, Any] = dict(tokenizers)
    for name, spec in arch["components"].items():
        if name == "scheduler":
            parts[name] = component_class(spec["class"]).from_config(spec["config"])
            continue
        tokenizer = tokenizers.get(name.replace("text_encoder", "tokenizer"))
        parts[name] = build_model(spec, tokenizer, device, dtype)
    return parts


def parameter_counts(arch: dict[str, Any]) -> dict[str, int]:
    """Each model component's parameters, counted on the meta device (no memory, no init)."""
    counts = {}
    for name, spec in arch["components"].items():
        if name != "scheduler":
            model = build_model(spec, None, "meta", torch.float32)
            counts[name] = sum(p.numel() for p in model.parameters())
    return counts


def build_family(
    arch: dict[str, Any], device: torch.device, dtype: torch.dtype, compile: bool = False
) -> Family:
    """The arch's stock pipeline, built in memory, wrapped in its Family as a loaded checkpoint would be."""
    import diffusers

    pipeline_class = getattr(diffusers, arch["pipeline"])
    parts = build_models(arch, device, dtype)
    accepted = inspect.signature(pipeline_class.__init__).parameters
    for name in NONE_COMPONENTS:
        if name in accepted:
            parts.setdefault(name, None)
    if "requires_safety_checker" in accepted:
        parts["requires_safety_checker"] = False
    if "add_watermarker" in accepted:
        parts["add_watermarker"] = False
    pipe = pipeline_class(**parts, **arch.get("pipeline_config", {}))
    pipe.set_progress_bar_config(disable=True)
    family_class = FAMILIES[arch["family"]]
    options = LoadOptions(
        model=f"random-weights:{arch['name']}",
        revision=None,
        device=device.type,
        dtype=dtype,
        offload="none",
        allow_pickle=False,
        family_options=arch.get("family_options", {}),
    )
    problem = family_class.options_problem("load", options.family_options, "family_options")
    if problem is not None:
        raise ValueError(problem)
    if family_class is DeepFloydIFFamily:
        family: Family = DeepFloydIFFamily(pipe, None, options, device)  # stage I only
    else:
        family = family_class(pipe, options, device)  # type: ignore[call-arg]
    # As load_family after loading: on CUDA channels_last, SDPA attention, VAE slicing; compile if asked.
    family.acceleration = accelerate(family.pipelines(), device, compile, "none")
    return family


# ------------------------------------------------------------------------------------------------- FLOPs


def count_flops(run: Callable[[], object]) -> int:
    """FLOPs of ``run`` (matmuls, convolutions, attention) by torch's FlopCounterMode. It knows the CUDA
    attention kernels (flash, memory-efficient, cuDNN) but not the CPU's fused one: that one is counted by the
    same formula, so that the small CPU run counts attention as the GPU run does."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop

    def cpu_sdpa_flop(*args: Any, **kwargs: Any) -> int:
        return int(sdpa_flop(*args, **kwargs))  # already takes tensors (out_val=...), as raw formulas do

    cpu_sdpa_flop._get_raw = True  # type: ignore[attr-defined]  # FlopCounterMode: do not wrap it again
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    custom = {cpu_attention: cpu_sdpa_flop} if cpu_attention is not None else {}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=custom) as counter:
        run()
    return int(counter.get_total_flops())


# A module call's positional and keyword arguments.
Call = tuple[tuple[Any, ...], dict[str, Any]]


def first_call(module: torch.nn.Module, run: Callable[[], object]) -> tuple[Call, Any]:
    """The arguments of ``module``'s first call during ``run`` (one denoiser forward at the batch that run
    used, to replay under the FLOP counter whatever the pipeline passes: SDXL's time ids, Flux's ids), and
    what ``run`` returned."""
    calls: list[Call] = []

    def record(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if not calls:
            calls.append((args, dict(kwargs)))

    handle = module.register_forward_pre_hook(record, with_kwargs=True)
    try:
        returned = run()
    finally:
        handle.remove()
    if not calls:
        raise RuntimeError(f"{type(module).__name__} was not called")
    return calls[0], returned


def batch_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
    return int(sample.shape[0])


@dataclass(frozen=True)
class Flops:
    """The FLOPs of one prompt's sweep, by part."""

    denoiser_per_item_step: float  # one item's share of one denoiser call (its classifier-free pair included)
    text_encoder_per_prompt: float  # one prompt through every text encoder, all hidden states
    vae_decode_per_image: float
    encodes: int  # prompt encodings of the lens: the prompt and, with classifier-free guidance, the negative

    def lens(self, items: int, steps: int) -> float:
        """The lens: each prompt encoded once, every item denoised and decoded."""
        per_item = steps * self.denoiser_per_item_step + self.vae_decode_per_image
        return self.encodes * self.text_encoder_per_prompt + items * per_item

    def loop(self, layers: int, seeds: int, steps: int) -> float:
        """The official-style loop: the prompt encoded again for each layer (the negative once)."""
        per_item = steps * self.denoiser_per_item_step + self.vae_decode_per_image
        encodes = layers + self.encodes - 1
        return encodes * self.text_encoder_per_prompt + layers * seeds * per_item


# ------------------------------------------------------------------------------------------------- runs


def timed(run: Callable[[], object], device: torch.device) -> float:
    """Wall time of ``run``, the device drained before and after."""
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def with_steps(settings: SamplerSettings, steps: int) -> SamplerSettings:
    return replace(settings, num_inference_steps=steps)


def count_syncs(family: Family, settings: SamplerSettings) -> dict[str, Any]:
    """Host-device syncs and copies of the lens's denoising loop (one item, one stock pipeline call), at two
    step counts so that the per-step count is told apart from the per-call one (encoding, the initial noise,
    the images back to the host): sync debug mode's warnings (each synchronizing op, with its call site) and
    the profiler's CUDA runtime calls and copies."""
    from torch.profiler import ProfilerActivity, profile

    runs: dict[int, dict[str, Any]] = {}
    for steps in SYNC_STEPS:
        synchronize(family.device)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
                    lens_sweep(
                        family, PROMPT, sweep_items([family.num_layers], 1), with_steps(settings, steps), 1
                    )
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message).lower()]
        events = Counter[str]()
        for event in profiler.key_averages():
            events[event.key] += event.count
        runs[steps] = {
            "sync_warnings": len(syncs),
            "sync_calls": sum(
                n for key, n in events.items() if key.startswith("cuda") and "Synchronize" in key
            ),
            "memcpy_HtoD": sum(n for key, n in events.items() if key.startswith("Memcpy HtoD")),
            "memcpy_DtoH": sum(n for key, n in events.items() if key.startswith("Memcpy DtoH")),
            "sites": Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs).most_common(8),
        }
    low, high = SYNC_STEPS
    keys = ("sync_warnings", "sync_calls", "memcpy_HtoD", "memcpy_DtoH")
    per_step = {key: (runs[high][key] - runs[low][key]) / (high - low) for key in keys}
    return {
        "method": f"one lens item, stock pipeline calls of {low} and {high} steps: "
        "torch.cuda.set_sync_debug_mode('warn') warnings, and torch.profiler's cuda*Synchronize calls and "
        "Memcpy HtoD/DtoH copies; per_step = the difference / the step difference, per_call = the rest",
        "per_step": per_step,
        "per_call": {key: runs[low][key] - low * per_step[key] for key in keys},
        "runs": {str(steps): run for steps, run in runs.items()},
    }


# --------------------------------------------------------------------------------------------- one model


@dataclass(frozen=True)
class Options:
    scale: str
    device: torch.device
    dtype: torch.dtype
    seeds: int | None
    layers: int | None
    steps: int | None
    loop_layers: int | None
    max_batch: int | str  # an integer, or "auto": the worker sizes the lens's batches (batching.py)
    adapt: bool
    peak_tflops: float | None
    archs: Path = ARCHS
    compile: bool = False


def throughput(flops: float, seconds: float, peak: float | None) -> dict[str, float | None]:
    achieved = flops / seconds / 1e12
    return {"tflops": flops / 1e12, "tflops_per_s": achieved, "mfu": achieved / peak if peak else None}


def peak_memory(device: torch.device) -> int | None:
    return int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def run_model(name: str, opts: Options, deadline: float | None) -> dict[str, Any]:
    """Build one model, count its FLOPs, time the lens and the loop; its figures as a dict."""
    arch = load_arch(name, opts.scale, opts.archs)
    device, dtype = opts.device, opts.dtype
    path = (opts.archs / f"{name}.json").resolve()
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    result: dict[str, Any] = {"status": "ok", "arch": str(shown), "about": arch["about"]}
    params = parameter_counts(arch)
    result["parameters"] = params
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        needed = sum(params.values()) * torch.finfo(dtype).bits // 8
        if needed * 1.15 + 4 * 2**30 > free:
            reason = f"memory: {needed / 2**30:.1f} GiB of weights, {free / 2**30:.1f} GiB free"
            return {**result, "status": "skipped", "reason": reason}
    if deadline is not None and deadline - time.monotonic() < MIN_MODEL_SECONDS:
        return {**result, "status": "skipped", "reason": "time limit: too little time left for this model"}

    log(f"{name}: building ({sum(params.values()) / 1e9:.2f}B parameters, {dtype}, {device})")
    started = time.perf_counter()
    family = build_family(arch, device, dtype, opts.compile)
    synchronize(device)
    result["build_s"] = time.perf_counter() - started
    result["weights_memory_bytes"] = (
        int(torch.cuda.memory_allocated(device)) if device.type == "cuda" else None
    )
    try:
        return {**result, **measure(name, family, arch, opts, deadline)}
    finally:
        # The next model needs the memory: nothing of this one may stay referenced.
        del family
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure(
    name: str, family: Family, arch: dict[str, Any], opts: Options, deadline: float | None
) -> dict[str, Any]:
    defaults = arch["defaults"]
    device, pipe = opts.device, family.pipe
    found = denoiser_of(pipe)
    assert found is not None, f"{name}: the pipeline has no UNet or transformer"
    denoiser = found[1]
    last = family.num_layers
    count = opts.layers or (2 if opts.scale == "small" else last + 1)
    layers = spread(range(last + 1), count)
    seeds = opts.seeds or (2 if opts.scale == "small" else defaults["seeds"])
    default_steps = opts.steps or defaults["steps"]
    size = defaults["size"]
    settings = SamplerSettings(default_steps, defaults["guidance"], size, size, None)
    items = sweep_items(layers, seeds)
    max_batch = opts.max_batch
    loop = official_loop

    # Warm-up (untimed): both paths at their batch sizes, recording a denoiser call of each (and of one item).
    # Under max_batch auto the lens's batch is the worker's choice: learnt from a warm-up over every item.
    log(f"{name}: warm-up")
    warm = with_steps(settings, CALIBRATION_STEPS)
    if max_batch == "auto":
        lens_call, summary = first_call(
            denoiser, lambda: lens_sweep(family, PROMPT, items, with_steps(settings, 1), max_batch)
        )
        batch = min(int(summary["max_batch_used"]), len(items))
    else:
        batch = min(int(max_batch), len(items))
        lens_call, _ = first_call(denoiser, lambda: lens_sweep(family, PROMPT, items[:batch], warm, batch))
    loop_call, _ = first_call(denoiser, lambda: loop(family, PROMPT, layers[:1], seeds, warm))
    one_call, _ = first_call(
        denoiser, lambda: lens_sweep(family, PROMPT, items[:1], with_steps(settings, 1), 1)
    )
    passes = batch_of(*one_call)  # denoiser batch per item: 2 under classifier-free guidance
    captured = {batch_of(*call) // passes: call for call in (lens_call, loop_call, one_call)}
    lens_items = batch_of(*lens_call) // passes  # under auto the first batch can be smaller than the rest
    del lens_call, loop_call, one_call

    log(f"{name}: counting FLOPs")
    per_call = {n: count_flops(lambda a=a, k=k: denoiser(*a, **k)) for n, (a, k) in captured.items()}
    del captured
    text_flops = count_flops(lambda: family.conditioning(PROMPT, [last]))
    vae_flops = 0
    if getattr(pipe, "vae", None) is not None:
        factor = pipe.vae_scale_factor
        channels = pipe.vae.config.latent_channels
        latents = torch.randn(
            1, channels, size // factor, size // factor, device=device, dtype=pipe.vae.dtype
        )
        vae_flops = count_flops(lambda: pipe.vae.decode(latents))
    flops = Flops(
        denoiser_per_item_step=per_call[lens_items] / lens_items,
        text_encoder_per_prompt=text_flops,
        vae_decode_per_image=vae_flops,
        encodes=2 if family.guidance == "cfg" else 1,
    )

    steps, notes, reserve = default_steps, [], 0.0
    if opts.adapt and deadline is not None:
        # Calibration: seconds per FLOP of a lens batch, to plan the steps that fit this model's time.
        seconds = timed(lambda: lens_sweep(family, PROMPT, items[:batch], warm, max_batch), device)
        rate = seconds / flops.lens(batch, CALIBRATION_STEPS)
        if device.type == "cuda":  # the sync count's two runs, under the profiler
            reserve = 2 * rate * sum(flops.lens(1, s) for s in SYNC_STEPS) + 5.0
        budget = (deadline - time.monotonic() - reserve) / 2  # half for the lens, half for the loop
        fixed = flops.encodes * flops.text_encoder_per_prompt + len(items) * flops.vae_decode_per_image
        fit = math.floor((budget / rate - fixed) / (len(items) * flops.denoiser_per_item_step))
        if opts.steps is None and fit < default_steps:
            steps = max(1, fit)
            notes.append(
                f"timed at {steps} of the default {default_steps} steps to fit the time limit (lens and loop "
                "alike); at_default_steps scales them by FLOPs"
            )
    timed_settings = with_steps(settings, steps)

    log(f"{name}: lens, {len(layers)} layers x {seeds} seeds = {len(items)} images, {steps} steps")
    reset_peak(device)
    summaries: list[Any] = []
    seconds_lens = timed(
        lambda: summaries.append(lens_sweep(family, PROMPT, items, timed_settings, max_batch)), device
    )
    # generate's summary, where lens_sweep returns it: the batch it sampled and its phases' times.
    summary = summaries[0] if isinstance(summaries[0], dict) else {}
    lens = {
        "images": len(items),
        "seconds": seconds_lens,
        "images_per_s": len(items) / seconds_lens,
        **throughput(flops.lens(len(items), steps), seconds_lens, opts.peak_tflops),
        "peak_memory_bytes": peak_memory(device),
        "max_batch": max_batch,
        "max_batch_used": summary.get("max_batch_used"),
        "timings_ms": summary.get("timings"),
    }

    loop_layers = layers
    if opts.loop_layers is not None:
        loop_layers = spread(layers, opts.loop_layers)
    elif opts.adapt and deadline is not None:
        rate_lens = seconds_lens / flops.lens(len(items), steps) * LOOP_SLOWDOWN
        budget = deadline - time.monotonic() - reserve
        per_layer = flops.loop(1, seeds, steps) - flops.loop(0, seeds, steps)
        fit = math.floor((budget / rate_lens - flops.loop(0, seeds, steps)) / per_layer)
        loop_layers = spread(layers, max(1, fit))
    log(f"{name}: official-style loop, {len(loop_layers)} of {len(layers)} layers x {seeds} seeds")
    reset_peak(device)
    seconds_loop = timed(lambda: loop(family, PROMPT, loop_layers, seeds, timed_settings), device)
    scale_up = len(layers) / len(loop_layers)
    if scale_up > 1:
        notes.append(
            f"loop timed on {len(loop_layers)} of {len(layers)} layers {loop_layers}, its time scaled "
            f"x{scale_up:.2f} (one pipeline call per layer)"
        )
    loop_images = len(loop_layers) * seeds
    official = {
        "images": len(items),
        "layers_timed": loop_layers,
        "images_timed": loop_images,
        "seconds_timed": seconds_loop,
        "seconds": seconds_loop * scale_up,
        "images_per_s": loop_images / seconds_loop,
        **throughput(flops.loop(len(loop_layers), seeds, steps), seconds_loop, opts.peak_tflops),
        "peak_memory_bytes": peak_memory(device),
    }

    result: dict[str, Any] = {
        "family": family.name,
        "settings": {
            "size": size,
            "steps_default": default_steps,
            "steps_timed": steps,
            "guidance": settings.guidance_scale,
            "scheduler": type(pipe.scheduler).__name__,
            "layers": layers,
            "seeds": seeds,
            "lens_max_batch": max_batch,
            "lens_batch_flops_counted": lens_items,
            "loop_batch": seeds,
        },
        "flops": {
            "denoiser_per_call": {str(n): f for n, f in sorted(per_call.items())},
            "denoiser_call_batch": {str(n): n * passes for n in sorted(per_call)},
            "denoiser_per_image_step": flops.denoiser_per_item_step,
            "denoiser_per_image": flops.denoiser_per_item_step * steps,
            "text_encoder_per_prompt": flops.text_encoder_per_prompt,
            "vae_decode_per_image": flops.vae_decode_per_image,
            "lens_total": flops.lens(len(items), steps),
            "loop_total": flops.loop(len(layers), seeds, steps),
        },
        "lens": lens,
        "loop": official,
        "ratio_lens_over_loop": lens["images_per_s"] / official["images_per_s"],
        "notes": notes,
    }
    if steps != default_steps:
        # The same runs at the default steps, scaled by their FLOPs (the denoiser's share grows with steps).
        timed_layers = len(loop_layers)
        lens_rate = (
            lens["images_per_s"] * flops.lens(len(items), steps) / flops.lens(len(items), default_steps)
        )
        loop_rate = (
            official["images_per_s"]
            * flops.loop(timed_layers, seeds, steps)
            / flops.loop(timed_layers, seeds, default_steps)
        )
        result["at_default_steps"] = {
            "lens_images_per_s": lens_rate,
            "loop_images_per_s": loop_rate,
            "ratio_lens_over_loop": lens_rate / loop_rate,
            "denoiser_per_image": flops.denoiser_per_item_step * default_steps,
        }
    if device.type == "cuda":
        log(f"{name}: counting host-device syncs")
        try:
            result["syncs"] = count_syncs(family, timed_settings)
        except Exception as exc:  # noqa: BLE001 - the figures above stand without it
            result["syncs"] = {"error": f"{type(exc).__name__}: {exc}"}
    else:
        result["syncs"] = None
    log(
        f"{name}: lens {lens['images_per_s']:.3f} images/s, loop {official['images_per_s']:.3f} images/s, "
        f"x{result['ratio_lens_over_loop']:.2f}"
    )
    return result


# -------------------------------------------------------------------------------------------------- main


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The device's dense bf16 peak and where it came from."""
    given = os.environ.get(PEAK_ENV)
    if given:
        return float(given), f"${PEAK_ENV}"
    if device.type != "cuda":
        return None, "no GPU"
    gpu = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS:
        if key in gpu:
            return value, f"table ({key}, dense bf16)"
    return None, f"unknown for {gpu}: set ${PEAK_ENV}"


def gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


def rate_text(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"## Diffusion Lens GPU benchmark ({report['scale']} size, random weights)",
        "",
        f"{env['gpu'] or 'CPU'}; torch {env['torch']}, diffusers {env['diffusers']}, transformers "
        f"{env['transformers']}; {env['dtype']}; peak {rate_text(env['peak_tflops'], 0)} TFLOP/s "
        f"({env['peak_source']})",
        "",
        "| model | images | steps (timed/default) | lens img/s | loop img/s | lens/loop | denoiser TFLOP/img "
        "| lens TFLOP/s | lens MFU | loop TFLOP/s | loop MFU | peak GiB lens/loop | syncs/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, model in report["models"].items():
        if model["status"] != "ok":
            lines.append(f"| {name} | {model['status']}: {model.get('reason', '')} |" + " |" * 11)
            continue
        s, lens, loop, flops = model["settings"], model["lens"], model["loop"], model["flops"]
        syncs = model.get("syncs") or {}
        per_step = syncs.get("per_step")
        sync_text = (
            "-" if per_step is None else f"{per_step['sync_warnings']:g} ({per_step['sync_calls']:g} calls)"
        )
        cells = [
            name,
            str(lens["images"]),
            f"{s['steps_timed']}/{s['steps_default']}",
            f"{lens['images_per_s']:.3f}",
            f"{loop['images_per_s']:.3f}",
            f"{model['ratio_lens_over_loop']:.2f}",
            f"{flops['denoiser_per_image'] / 1e12:.3g}",
            f"{lens['tflops_per_s']:.3g}",
            rate_text(lens["mfu"]),
            f"{loop['tflops_per_s']:.3g}",
            rate_text(loop["mfu"]),
            f"{gib(lens['peak_memory_bytes'])}/{gib(loop['peak_memory_bytes'])}",
            sync_text,
        ]
        lines.append("| " + " | ".join(cells) + " |")
        notes += [f"- {name}: {note}" for note in model["notes"]]
        if "at_default_steps" in model:
            at = model["at_default_steps"]
            notes.append(
                f"- {name} at the default {s['steps_default']} steps (FLOP-scaled): lens "
                f"{at['lens_images_per_s']:.3f} img/s, loop {at['loop_images_per_s']:.3f} img/s, "
                f"x{at['ratio_lens_over_loop']:.2f}"
            )
        if per_step is not None:
            sites = ", ".join(f"{site} x{n}" for site, n in syncs["runs"][str(SYNC_STEPS[-1])]["sites"][:4])
            notes.append(
                f"- {name} syncs: per step {per_step['sync_warnings']:g} synchronizing ops, "
                f"{per_step['sync_calls']:g} cuda*Synchronize calls, {per_step['memcpy_HtoD']:g} HtoD and "
                f"{per_step['memcpy_DtoH']:g} DtoH copies (stock diffusers loop); sites: {sites or 'none'}"
            )
        elif syncs.get("error"):
            notes.append(f"- {name} syncs: not counted ({syncs['error']})")
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def environment(device: torch.device, dtype: torch.dtype, peak: float | None, source: str) -> dict[str, Any]:
    return {
        **library_versions(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "dtype": str(dtype).removeprefix("torch."),
        "peak_tflops": peak,
        "peak_source": source,
        "cpu_threads": torch.get_num_threads(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument(
        "--scale", choices=("auto", "full", "small"), default="auto", help="auto: full on a GPU, else small"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if there is one), cuda or cpu")
    parser.add_argument("--out", default="bench-gpu.json", help="where the JSON of every figure is written")
    parser.add_argument("--seeds", type=int, help="default 4 (small: 2)")
    parser.add_argument("--layers", type=int, help="how many layers, evenly spread (default all; small: 2)")
    parser.add_argument("--steps", type=int, help="denoising steps (default the model's; fixed, not adapted)")
    parser.add_argument("--loop-layers", type=int, help="layers the loop is timed on (default: what fits)")
    parser.add_argument(
        "--max-batch",
        type=batch_size,
        default=8,
        help="the lens's items per batch (runtime.max_batch), or auto (the worker sizes them); default 8",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the denoisers (as model.compile; the warm-up compiles)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=400.0,
        help=f"seconds for the whole run when adapting, from ${STARTED_ENV} (gpu.sh's start) if set; "
        "default %(default)s",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; small on CPU: 1)")
    parser.add_argument(
        "--adapt",
        action=argparse.BooleanOptionalAction,
        help="fit the time limit by fewer steps and a loop on fewer layers (default: at full size); "
        "--no-adapt: the default steps and every layer, however long",
    )
    parser.add_argument("--archs", type=Path, default=ARCHS, help="folder of the architecture JSON files")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(
        args.device if args.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    scale = args.scale if args.scale != "auto" else "full" if device.type == "cuda" else "small"
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        raise SystemExit(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    peak, source = peak_tflops(device)
    opts = Options(
        scale=scale,
        device=device,
        dtype=dtype,
        seeds=args.seeds,
        layers=args.layers,
        steps=args.steps,
        loop_layers=args.loop_layers,
        max_batch=args.max_batch,
        adapt=scale == "full" if args.adapt is None else args.adapt,
        peak_tflops=peak,
        archs=args.archs,
        compile=args.compile,
    )
    # Random weights can give NaN pixels; their cast to uint8 warns, once per batch, to no purpose here.
    warnings.filterwarnings("ignore", message="invalid value encountered in cast", category=RuntimeWarning)
    threads = torch.get_num_threads()
    if args.threads or (device.type == "cpu" and scale == "small"):
        # The small models' ops are tiny: on a loaded machine a second thread's barriers cost far more than it
        # gains (20x slower seen on a shared 2-core box), so the smoke run uses one unless told otherwise.
        torch.set_num_threads(args.threads or 1)
    try:
        return run_all(args, models, opts, device, dtype, peak, source)
    finally:
        torch.set_num_threads(threads)


def run_all(
    args: argparse.Namespace,
    models: list[str],
    opts: Options,
    device: torch.device,
    dtype: torch.dtype,
    peak: float | None,
    source: str,
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "scale": opts.scale,
        "prompt": PROMPT,
        "environment": environment(device, dtype, peak, source),
        "time_limit_s": args.time_limit if opts.adapt else None,
        "models": {},
    }
    env = report["environment"]
    log(
        f"{', '.join(models)} at {opts.scale} size on {env['gpu'] or device}; torch {env['torch']}, "
        f"diffusers {env['diffusers']}, transformers {env['transformers']}"
    )
    end = _started + args.time_limit
    for index, name in enumerate(models):
        deadline = None
        if opts.adapt:
            # This model's share of the time left, by weight, so that a slow one leaves the next its share.
            left = sum(WEIGHTS[m] for m in models[index:])
            deadline = time.monotonic() + (end - time.monotonic()) * WEIGHTS[name] / left
        try:
            report["models"][name] = run_model(name, opts, deadline)
        except Exception as exc:  # noqa: BLE001 - one model's failure is reported, the others still run
            traceback.print_exc()
            report["models"][name] = {"status": "error", "reason": f"{type(exc).__name__}: {exc}"}
        # After the except block, whose traceback holds the failed model's frames (and weights) till its end.
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if report["models"][name]["status"] != "ok":
            log(f"{name}: {report['models'][name]['status']}: {report['models'][name]['reason']}")
        # Written after each model, so that a run stopped at its time limit still leaves the models it did.
        report["wall_s"] = time.monotonic() - _started
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(markdown(report))
    print(f"\nfigures: {args.out}")
    return report


if __name__ == "__main__":
    main()
