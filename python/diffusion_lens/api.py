"""The Python API, for notebooks: ``diffusion_lens.lens(pipe, "a red apple")`` on an already-loaded diffusers
pipeline. It wraps the pipeline in its family (``families.wrap_pipeline``, nothing reloaded) and calls
``lens.generate`` exactly as the worker's engine does, so the stock-equality tests of the lens cover it.
``LensResult.save`` writes the CLI's folder layout (images, grids, manifest.json, images.csv)."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import __version__
from .ablations import Ablation, InjectedEmbeds, Mix, embeds_bytes, parse_embeds, read_embeds
from .batching import AUTO, MaxBatch
from .devices import library_versions
from .families import Embeds, Readout, SamplerSettings, wrap_pipeline
from .generation import Item, LensOptions, Progress, encode_all, generate
from .images import png_bytes
from .layer_spec import LayerSpecInput, resolve_layers
from .layout import (
    IMAGES_CSV_FILE,
    LENS_ALGORITHM_VERSION,
    MANIFEST_FILE,
    MANIFEST_VERSION,
    content_key,
    grid_path,
    image_path,
    image_readout,
    images_csv,
    layer_depth,
    manifest_json,
    write_atomic,
)

__all__ = ["LensResult", "lens"]

UNCOND_MODES = ("final", "same-layer")
NOISE_MODES = ("shared", "per-layer")
# The code that made an image, in its content key: never equal to a CLI version, so keys never collide.
KEY_TOOL = f"python-api/{__version__}"
# The question of a prompt of no prompt set (src/config/prompt-sets.ts GENERIC_QUESTION).
GENERIC_QUESTION = {"id": "matches_prompt", "text": 'Does the image show "{prompt}"?', "expected": "yes"}
# Components the worker loads as None: the lens runs with the safety checker and watermark off.
_CHECKERS = ("safety_checker", "watermarker")


@dataclass
class LensResult:
    """The images of one lens run: ``image(layer, seed, prompt=0)``; for a run of one prompt also
    ``images[layer][seed]`` (PIL images) and ``embeddings[layer]``; ``grid()``; ``save(dir)``."""

    prompts: list[str]
    layers: list[int]
    seeds: list[int]
    num_layers: int
    stock_layer: int
    family: str
    # By prompt index: {layer: {seed: image}}.
    all_images: list[dict[int, dict[int, Image.Image]]]
    # By prompt index: {layer: the conditioning (the stock pipeline's arguments by name), on the CPU};
    # None unless return_embeddings=True.
    all_embeddings: list[dict[int, Embeds]] | None = None
    # What save() writes besides the images (manifest fields).
    run: dict[str, Any] = field(default_factory=dict, repr=False)

    def _single(self, what: str) -> int:
        if len(self.prompts) != 1:
            raise ValueError(
                f"this result has {len(self.prompts)} prompts: use result.{what}_for(prompt_index) "
                f"(or result.image(layer, seed, prompt=i)) instead of result.{what}"
            )
        return 0

    @property
    def images(self) -> dict[int, dict[int, Image.Image]]:
        """``images[layer][seed]`` of a one-prompt run (``images_for(i)`` for prompt ``i`` of several)."""
        return self.all_images[self._single("images")]

    def images_for(self, prompt: int) -> dict[int, dict[int, Image.Image]]:
        return self.all_images[prompt]

    @property
    def embeddings(self) -> dict[int, Embeds]:
        """``embeddings[layer]``: the conditioning of a one-prompt run (``return_embeddings=True``), e.g.
        ``embeddings[3]["prompt_embeds"]``; ``embeddings_for(i)`` for prompt ``i`` of several."""
        return self.embeddings_for(self._single("embeddings"))

    def embeddings_for(self, prompt: int) -> dict[int, Embeds]:
        if self.all_embeddings is None:
            raise ValueError("no embeddings were kept: call diffusion_lens.lens(..., return_embeddings=True)")
        return self.all_embeddings[prompt]

    def image(self, layer: int, seed: int, prompt: int = 0) -> Image.Image:
        return self.all_images[prompt][layer][seed]

    def __iter__(self) -> Iterator[tuple[int, int, int, Image.Image]]:
        """(prompt index, layer, seed, image) in run order."""
        for prompt, by_layer in enumerate(self.all_images):
            for layer in self.layers:
                for seed in self.seeds:
                    yield prompt, layer, seed, by_layer[layer][seed]

    def grid(self, prompt: int = 0, scale: int | None = None) -> Image.Image:
        """The layer-by-seed grid of one prompt: rows = layers (``L3 · 60%``, the stock layer marked),
        columns = seeds, the prompt above. Small images are scaled up (nearest) to at least 128 pixels
        (``scale`` sets the factor)."""
        by_layer = self.all_images[prompt]
        width, height = by_layer[self.layers[0]][self.seeds[0]].size
        factor = scale or max(1, math.ceil(128 / min(width, height)))
        cell_w, cell_h = width * factor, height * factor
        font = ImageFont.load_default()
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

        def text_size(text: str) -> tuple[int, int]:
            left, top, right, bottom = measure.textbbox((0, 0), text, font=font)
            return int(right - left), int(bottom - top)

        labels = {
            layer: f"L{layer} · {layer_depth(layer, self.num_layers)}%"
            + (" stock" if layer == self.stock_layer else "")
            for layer in self.layers
        }
        line = max(text_size("Ag")[1], 10) + 6
        pad = 6
        label_w = max(text_size(text)[0] for text in labels.values()) + 2 * pad
        top = 2 * line + pad
        canvas = Image.new(
            "RGB",
            (label_w + len(self.seeds) * (cell_w + pad) + pad, top + len(self.layers) * (cell_h + pad)),
            "white",
        )
        draw = ImageDraw.Draw(canvas)
        title = self.prompts[prompt]
        draw.text((pad, pad // 2), title if len(title) <= 120 else title[:119] + "…", fill="black", font=font)
        for column, seed in enumerate(self.seeds):
            draw.text(
                (label_w + column * (cell_w + pad), line + pad // 2), f"seed {seed}", fill="black", font=font
            )
        for row, layer in enumerate(self.layers):
            y = top + row * (cell_h + pad)
            draw.text((pad, y + cell_h // 2 - line // 2), labels[layer], fill="black", font=font)
            for column, seed in enumerate(self.seeds):
                cell = by_layer[layer][seed]
                if factor != 1:
                    cell = cell.resize((cell_w, cell_h), Image.Resampling.NEAREST)
                canvas.paste(cell, (label_w + column * (cell_w + pad), y))
        return canvas

    def _repr_png_(self) -> bytes:
        """Jupyter shows a one-prompt result as its grid."""
        buffer = self.grid(self._single("grid"))
        return png_bytes(np.asarray(buffer))

    def manifest(self, grids: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """The run's manifest.json, shaped as the CLI's (src/experiment/manifest.ts ``Manifest``)."""
        run = self.run
        images = [
            {
                "prompt": self.prompts[prompt],
                "prompt_index": prompt,
                "layer": layer,
                "depth": layer_depth(layer, self.num_layers),
                "seed": seed,
                "stage": 1,
                "path": image_path(self.prompts[prompt], layer, seed, self.num_layers),
                "key": content_key(run["settings"], self.prompts[prompt], layer, seed, KEY_TOOL),
                "readout": image_readout(layer, run["encoders"], run["follows"], run["pooled"]),
            }
            for prompt, layer, seed, _ in self
        ]
        return {
            "version": MANIFEST_VERSION,
            "tool": {
                "name": "diffusion-lens",
                "version": __version__,
                "lens_algorithm": LENS_ALGORITHM_VERSION,
            },
            "complete": True,
            "config": run["config"],
            "model": run["model"],
            "lens": run["lens"],
            "worker": run["worker"],
            "prompt_columns": [],
            "prompt_set": None,
            "prompts": [
                {
                    "prompt": prompt,
                    "columns": {},
                    "truncated": run["truncated"].get(index),
                    "lensed_tokens": run["lensed_tokens"].get(index),
                    "questions": [
                        dict(GENERIC_QUESTION, text=GENERIC_QUESTION["text"].format(prompt=prompt))
                    ],
                }
                for index, prompt in enumerate(self.prompts)
            ],
            "images": images,
            "grids": list(grids),
            "timings": run["timings"],
        }

    def save(self, directory: str | Path, grids: bool = True) -> Path:
        """Writes the CLI's folder layout under ``directory``: ``images/<prompt-slug>-<hash8>/L03-s2.png``
        (the bytes the worker sends for them), ``grids/<prompt-slug>-<hash8>.png`` (``grid()``),
        ``manifest.json`` and ``images.csv``. Returns the manifest's path. Refuses a folder the CLI
        manages (one with ``.diffusion-lens/``); files of an earlier save stay but leave the manifest."""
        out = Path(directory)
        if (out / ".diffusion-lens").exists():
            raise FileExistsError(
                f"{out} is a folder the diffusion-lens CLI manages (it has .diffusion-lens/): save elsewhere"
            )
        for prompt, layer, seed, image in self:
            path = image_path(self.prompts[prompt], layer, seed, self.num_layers)
            write_atomic(out / path, png_bytes(np.asarray(image)))
        written = []
        if grids:
            for index, prompt in enumerate(self.prompts):
                path = grid_path(prompt)
                buffer = self.grid(index)
                write_atomic(out / path, png_bytes(np.asarray(buffer)))
                written.append({"prompt": prompt, "stage": 1, "path": path})
        manifest = self.manifest(written)
        write_atomic(out / IMAGES_CSV_FILE, images_csv(manifest))
        write_atomic(out / MANIFEST_FILE, manifest_json(manifest))
        return out / MANIFEST_FILE


def _size(size: int | Sequence[int] | None, defaults: dict[str, Any]) -> tuple[int, int]:
    if size is None:
        return int(defaults["height"]), int(defaults["width"])
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, Sequence) and len(size) == 2 and all(isinstance(side, int) for side in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be one side (a square) or (height, width) in pixels, not {size!r}")


def _mix(mix: Mapping[str, Any] | Sequence[Any] | None, num_layers: int, stock: int) -> Mix | None:
    """``{"layers": [a, b], "alpha": x}`` or ``(a, b, x)``; a and b as layer specs of one layer."""
    if mix is None:
        return None
    if isinstance(mix, Mapping):
        pair, alpha = mix.get("layers"), mix.get("alpha")
    elif isinstance(mix, Sequence) and not isinstance(mix, str) and len(mix) == 3:
        pair, alpha = mix[:2], mix[2]
    else:
        pair, alpha = None, None
    if not isinstance(pair, Sequence) or isinstance(pair, str) or len(pair) != 2:
        raise ValueError(f'mix must be {{"layers": [a, b], "alpha": x}} or (a, b, x), not {mix!r}')
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ValueError(f"mix alpha must be a number in 0..1, not {alpha!r}")
    first, second = (resolve_layers(layer, num_layers, stock) for layer in pair)
    if len(first) != 1 or len(second) != 1:
        raise ValueError(f"mix layers must name one layer each, not {list(pair)!r}")
    return Mix(layers=(first[0], second[0]), alpha=float(alpha))


def _embeds(embeds: str | Path | Mapping[str, Any] | None) -> InjectedEmbeds | None:
    if embeds is None:
        return None
    if isinstance(embeds, str | Path):
        return read_embeds(embeds)
    return parse_embeds(embeds_bytes(embeds))


def _ablation_settings(tokens: str | int, mix: Mix | None, embeds: InjectedEmbeds | None) -> dict[str, Any]:
    """The ablations as the CLI's settings carry them (and so the keys): only those that are set."""
    return {
        **({} if tokens == "all" else {"tokens": tokens}),
        **({} if mix is None else {"mix": {"layers": list(mix.layers), "alpha": mix.alpha}}),
        **({} if embeds is None else {"embeds": {"sha256": embeds.sha256}}),
    }


def _choice(name: str, value: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _seeds(seeds: int | Sequence[int]) -> list[int]:
    values = [seeds] if isinstance(seeds, int) else list(seeds)
    if not values:
        raise ValueError("seeds is empty")
    for seed in values:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
            raise ValueError(f"seed {seed!r} is not an integer 0..2^63-1")
    if len(set(values)) != len(values):
        raise ValueError(f"seeds {values} list a seed twice")
    return values


@contextlib.contextmanager
def _as_worker(pipe: Any, quiet: bool) -> Iterator[None]:
    """The pipeline as the worker loads it, for the call only: no safety checker or watermark (their
    outputs would not be the lens's), and its own progress bar off when ours is on."""
    saved = {name: getattr(pipe, name) for name in _CHECKERS if getattr(pipe, name, None) is not None}
    bar = getattr(pipe, "_progress_bar_config", None)
    try:
        for name in saved:
            setattr(pipe, name, None)
        if quiet:
            pipe.set_progress_bar_config(disable=True)
        yield
    finally:
        for name, component in saved.items():
            setattr(pipe, name, component)
        if quiet:
            if bar is None:
                del pipe._progress_bar_config
            else:
                pipe._progress_bar_config = bar


def _versions() -> dict[str, str]:
    return {"version": __version__, **library_versions()}


def lens(
    pipe: Any,
    prompts: str | Sequence[str],
    layers: LayerSpecInput = "all",
    seeds: int | Sequence[int] = (0,),
    steps: int | None = None,
    guidance: float | None = None,
    size: int | Sequence[int] | None = None,
    negative: str = "",
    uncond: str = "final",
    noise: str = "shared",
    encoders: str | Sequence[str] = "all",
    pooled: str = "final",
    tokens: str | int = "all",
    mix: Mapping[str, Any] | Sequence[Any] | None = None,
    embeds: str | Path | Mapping[str, Any] | None = None,
    max_batch: MaxBatch = AUTO,
    scheduler: str | None = None,
    family_options: dict[str, Any] | None = None,
    sample_options: dict[str, Any] | None = None,
    return_embeddings: bool = False,
    progress: bool = True,
    model_id: str | None = None,
) -> LensResult:
    """Diffusion Lens on an already-loaded diffusers pipeline (StableDiffusionPipeline, SDXL, SD3, Flux,
    PixArt, Sana, or DeepFloyd IF stage I): one image per (prompt, layer, seed), each conditioned on
    hidden state ``layer`` of the text encoder. The options are the CLI's (README "What the lens does"):
    ``layers`` a layer spec ("all", "stock", 3, [0, 4, 8], "0:8:2", "-1", "0%:100%:25%"); ``steps``,
    ``guidance`` and ``size`` (one side, or (height, width)) default to the pipeline's own; ``scheduler``
    one of the CLI's scheduler names (None: the pipeline's own); ``family_options`` the family's load
    options (e.g. ``{"max_sequence_length": 256}`` for Flux), ``sample_options`` its sampling options.
    The ablations (README "Ablations") change the prompt's conditioning: ``tokens`` ("all", "prompt",
    "padding" or one position: which positions of ``prompt_embeds`` follow the layer, the others taking
    the stock layer's); ``mix`` ({"layers": [a, b], "alpha": 0.5} or (a, b, 0.5): layer a's
    conditioning moved alpha of the way to layer b's; ``layers`` is then [a]); ``embeds`` (a safetensors
    file, {argument: tensor} for every prompt, or {prompt: {argument: tensor}}: tensors that replace the
    arguments of their names, e.g. an edited ``result.embeddings[l]``; ``save_embeds`` writes such a
    file for the CLI).
    ``max_batch`` is the items per denoiser batch, or "auto" (the worker's rule: on CUDA what the free
    memory holds, on the CPU the seeds of a (prompt, layer); batching.py).
    ``return_embeddings`` keeps each layer's conditioning (on the CPU, ablated) as ``result.embeddings``.
    ``model_id`` is the model's name in the manifest (default: the pipeline's ``_name_or_path``).

    Raises ValueError (CheckpointError, LayerSpecError, BadRequest) for what cannot be run."""
    family = wrap_pipeline(pipe, family_options)
    described = family.describe()
    defaults = described["defaults"]
    prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompt_list or not all(isinstance(prompt, str) for prompt in prompt_list):
        raise ValueError("prompts must be a string or a non-empty list of strings")
    if len(set(prompt_list)) != len(prompt_list):
        raise ValueError("a prompt is listed twice")
    mix_layers = _mix(mix, family.num_layers, family.stock_layer)
    layer_list = resolve_layers(layers, family.num_layers, family.stock_layer)
    if mix_layers is not None:
        if layers != "all" and layer_list != [mix_layers.layers[0]]:
            raise ValueError(
                f"with mix, layers is [{mix_layers.layers[0]}] (mix's first layer); leave it out"
            )
        layer_list = [mix_layers.layers[0]]
    injected = _embeds(embeds)
    seed_list = _seeds(seeds)
    height, width = _size(size, defaults)
    if max_batch != AUTO and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise ValueError(f"max_batch must be 'auto' or an integer >= 1, not {max_batch!r}")
    follows = None if encoders == "all" else sorted([encoders] if isinstance(encoders, str) else encoders)
    settings = SamplerSettings(
        num_inference_steps=int(defaults["steps"] if steps is None else steps),
        guidance_scale=float(defaults["guidance"] if guidance is None else guidance),
        height=height,
        width=width,
        scheduler=scheduler,
        family_options=dict(sample_options or {}),
    )
    options = LensOptions(
        negative_prompt=negative,
        uncond=_choice("uncond", uncond, UNCOND_MODES),
        noise=_choice("noise", noise, NOISE_MODES),
        max_batch=max_batch,
        readout=Readout(encoders=None if follows is None else frozenset(follows), pooled=pooled),
        ablation=Ablation(tokens=tokens, mix=mix_layers, embeds=injected),
    )
    items = [
        Item(prompt=p, layer=layer, seed=seed)
        for p in range(len(prompt_list))
        for layer in layer_list
        for seed in seed_list
    ]
    all_images: list[dict[int, dict[int, Image.Image]]] = [
        {layer: {} for layer in layer_list} for _ in prompt_list
    ]

    def on_image(index: int, item: Item, stage: int, image: np.ndarray, ms: float) -> None:
        all_images[item.prompt][item.layer][item.seed] = Image.fromarray(image)

    bar = _progress_bar(len(items) * settings.steps_per_item) if progress else None

    def on_progress(state: Progress) -> None:
        if bar is not None:
            bar.update(state.done_units - bar.n)

    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    try:
        with _as_worker(pipe, quiet=progress):
            done = generate(family, prompt_list, items, settings, options, on_image, on_progress)
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    for notice in done["notices"]:  # e.g. that the VAE decoded in tiles (CUDA, large images)
        warnings.warn(notice, stacklevel=2)
    all_embeddings = None
    if return_embeddings:
        with torch.no_grad(), family.encoding():
            cond, _ = encode_all(family, prompt_list, items, options)
        all_embeddings = [
            {layer: {name: t.detach().cpu() for name, t in cond[(p, layer)].items()} for layer in layer_list}
            for p in range(len(prompt_list))
        ]
    result = LensResult(
        prompts=prompt_list,
        layers=layer_list,
        seeds=seed_list,
        num_layers=family.num_layers,
        stock_layer=family.stock_layer,
        family=family.name,
        all_images=all_images,
        all_embeddings=all_embeddings,
    )
    model = model_id or family.options.model
    resolved = family.resolve_options("sample", settings.family_options)
    scheduler_name = scheduler or "default"
    scheduler_used = defaults["scheduler"] if scheduler_name == "default" else scheduler_name
    load_options = described["family_options"]
    result.run = {
        "settings": {
            "model": {
                "id": model,
                "revision": family.revision,
                "family": family.name,
                "dtype": described["dtype"],
                **load_options,
            },
            "sampler": {
                "steps": settings.num_inference_steps,
                "guidance": settings.guidance_scale,
                "height": height,
                "width": width,
                "scheduler": scheduler_used,
                "negative": negative,
                **resolved,
            },
            "lens": {
                "uncond": uncond,
                "noise": noise,
                **({} if follows is None else {"encoders": follows}),
                **({} if pooled == "final" else {"pooled": pooled}),
                **_ablation_settings(tokens, mix_layers, injected),
            },
        },
        "encoders": described["encoders"],
        "follows": follows,
        "pooled": pooled,
        "truncated": {
            found["prompt"]: {"tokens": found["tokens"], "max_tokens": found["max_tokens"]}
            for found in done["truncated"]
        },
        "lensed_tokens": {
            found["prompt"]: {"positions": found["positions"], "tokens": found["tokens"]}
            for found in done["lensed_tokens"]
        },
        "config": {
            "name": "python-api",
            "model": {"id": model, "family": family.name},
            "sampler": {
                "steps": settings.num_inference_steps,
                "guidance": settings.guidance_scale,
                "size": [height, width],
                "height": height,
                "width": width,
                "scheduler": scheduler_name,
                "scheduler_class": defaults["scheduler"] if scheduler_name == "default" else None,
                "negative": negative,
                "family_options": resolved,
            },
            "lens": {
                "layers": layer_list,
                "layer_spec": layers if isinstance(layers, (str, int)) else list(layers),
                "uncond": uncond,
                "noise": noise,
                "encoders": "all" if follows is None else follows,
                "pooled": pooled,
                "tokens": tokens,
                "mix": None
                if mix_layers is None
                else {"layers": list(mix_layers.layers), "alpha": mix_layers.alpha},
                # The file (absolute; None for tensors given in memory) and its bytes' sha256.
                "embeds": None
                if injected is None
                else {
                    "path": str(Path(embeds).resolve()) if isinstance(embeds, str | Path) else None,
                    "sha256": injected.sha256,
                },
            },
            "seeds": seed_list,
            "prompts": prompt_list,
            "runtime": {"max_batch": max_batch},
            "stages": [1],
            "stage2": None,
        },
        "model": {
            "id": model,
            "family": family.name,
            "num_layers": family.num_layers,
            "revision": family.revision,
            "pipeline_class": described["pipeline_class"],
            "dtype": described["dtype"],
            "device": described["device"],
            "family_options": load_options,
            "stage2": None,
            "config": None,
            "lora": [],
        },
        "lens": described["lens"],
        "worker": _versions(),
        "timings": {
            "started": started_at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "seconds": seconds,
            "images_generated": len(items),
            "images_skipped": 0,
            "images_per_second": round(len(items) / seconds, 3) if seconds > 0 else 0,
        },
    }
    return result


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm  # a diffusers dependency

    return tqdm(total=total, unit="step", desc="diffusion-lens")
