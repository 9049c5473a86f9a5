"""Does a shapes pipeline use the position words? Two probes, cheap enough to run on any checkpoint
(the model card's figures; the ablation's "lean" column):

    python -m diffusion_lens.shapes.probe [--model models/shapes] [--noises 32]

- words apart: the L2 distance between the text encoder's final states (what the UNet reads) of two
  prompts that differ in one word: the position word (left <-> right, top <-> bottom), and, for scale,
  the colour word. A distance near 0 means the encoder has merged the two words.
- lean: where the UNet's first prediction of the clean image puts the ink. At the sampler's first step
  (pure noise), the conditional prediction of the clean latents, averaged over ``noises`` noises and
  decoded by the VAE, is the model's belief about the layout; its centre of mass (pixels, x to the
  right, y down) is taken per position word. "lean x" is the right-minus-left distance, "lean y" the
  bottom-minus-top one; the training scenes' own (rendered, exact) lean is printed beside it.

And a check of the VAE, which bounds everything the pipeline draws: every count scene (all colours,
shapes and sizes, 2 and 3 copies) rendered, encoded and decoded; per palette colour, how far the decoded
objects' mean colour is from the palette's (the largest channel's error, 0-255) and the share of the
round trips that the scorer still reads right on every question.
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from .bench import DEFAULT_MODEL
from .render import render
from .scorer import score
from .world import COLORS, Obj, Scene, all_scenes

PLACES = ("left", "right", "top", "bottom")
SWAPPED = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class Probe:
    position_words_apart: float  # mean final-state distance, position word swapped
    colour_words_apart: float  # the same, colour word swapped
    centres: dict[str, tuple[float, float]]  # position word -> mean ink centre (x, y) in pixels
    data_centres: dict[str, tuple[float, float]]  # the same, of rendered training-style scenes

    @staticmethod
    def leans(centres: dict[str, tuple[float, float]]) -> tuple[float, float]:
        return centres["right"][0] - centres["left"][0], centres["bottom"][1] - centres["top"][1]

    @property
    def lean(self) -> tuple[float, float]:
        return self.leans(self.centres)

    @property
    def data_lean(self) -> tuple[float, float]:
        return self.leans(self.data_centres)


# Six colours on the six shapes.
OBJECTS = tuple(
    Obj(color, shape, "large")
    for color, shape in (("red", "circle"), ("blue", "square"), ("green", "cross"), ("yellow", "diamond"),
                         ("purple", "triangle"), ("cyan", "bar"))
)  # fmt: skip


def scenes(objects: int) -> list[Scene]:
    """The first ``objects`` of ``OBJECTS`` at each of the four outer positions."""
    if not 1 <= objects <= len(OBJECTS):
        raise ValueError(f"objects: {objects} is not from 1 to {len(OBJECTS)}")
    return [Scene("single", (obj,), position=place) for place in PLACES for obj in OBJECTS[:objects]]


def ink_centre(image: np.ndarray) -> tuple[float, float]:
    """Centre of mass (x, y, pixels) of how far each pixel is from the white background; ``image`` is
    (3, H, W) in [-1, 1]."""
    ink = np.clip(1.0 - image.mean(axis=0), 0.0, None)
    total = ink.sum()
    if total <= 0:
        return (image.shape[2] - 1) / 2, (image.shape[1] - 1) / 2
    ys, xs = np.indices(ink.shape)
    return float((ink * xs).sum() / total), float((ink * ys).sum() / total)


def mean_centres(found: dict[str, list[tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    return {place: tuple(np.mean(points, axis=0).round(2).tolist()) for place, points in found.items()}  # type: ignore[misc]


@torch.inference_mode()
def final_states(pipe: StableDiffusionPipeline, prompts: list[str]) -> torch.Tensor:
    ids = pipe.tokenizer(
        prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
        return_tensors="pt",
    ).input_ids  # fmt: skip
    return pipe.text_encoder(ids).last_hidden_state


def words_apart(pipe: StableDiffusionPipeline, base: list[Scene]) -> tuple[float, float]:
    def distance(others: list[Scene]) -> float:
        a, b = final_states(pipe, [s.prompt for s in base]), final_states(pipe, [s.prompt for s in others])
        return float((a - b).flatten(1).norm(dim=1).mean())

    by_position = [Scene("single", s.objects, position=SWAPPED[s.position or "left"]) for s in base]
    by_colour = [
        Scene("single", (Obj(COLOR_NAMES[(COLOR_NAMES.index(o.color) + 1) % len(COLORS)], o.shape, o.size),),
              position=s.position)
        for s in base for o in s.objects
    ]  # fmt: skip
    return distance(by_position), distance(by_colour)


def predicted_clean(
    prediction_type: str, alpha: torch.Tensor, noisy: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """The clean latents a UNet output implies at cumulative alpha ``alpha``."""
    if prediction_type == "v_prediction":
        return alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
    # Epsilon: the division is what makes an epsilon model's noisiest prediction so uncertain.
    return (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt()


@torch.inference_mode()
def first_prediction_centres(
    pipe: StableDiffusionPipeline, base: list[Scene], noises: int, seed: int
) -> dict[str, tuple[float, float]]:
    scheduler = pipe.scheduler
    scheduler.set_timesteps(20)
    t = scheduler.timesteps[0]
    alpha = scheduler.alphas_cumprod[int(t)].to(torch.float64)
    shape = (noises, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    noisy = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scheduler.init_noise_sigma
    model_input = scheduler.scale_model_input(noisy, t)
    found: dict[str, list[tuple[float, float]]] = {place: [] for place in PLACES}
    states = final_states(pipe, [s.prompt for s in base])
    for scene, state in zip(base, states, strict=True):
        out = pipe.unet(model_input, t, encoder_hidden_states=state.expand(noises, -1, -1)).sample.double()
        clean = predicted_clean(scheduler.config.prediction_type, alpha, noisy.double(), out)
        latent = clean.mean(dim=0, keepdim=True).float() / pipe.vae.config.scaling_factor
        image = pipe.vae.decode(latent).sample[0].clamp(-1, 1).numpy()
        found[scene.position or ""].append(ink_centre(image))
    return mean_centres(found)


def data_centres(base: list[Scene], size: int, renders: int, seed: int) -> dict[str, tuple[float, float]]:
    rng = random.Random(seed)
    found: dict[str, list[tuple[float, float]]] = {place: [] for place in PLACES}
    for scene in base:
        for _ in range(renders):
            pixels = np.asarray(render(scene, size, rng), dtype=np.float64).transpose(2, 0, 1) / 127.5 - 1
            found[scene.position or ""].append(ink_centre(pixels))
    return mean_centres(found)


def probe(pipe: StableDiffusionPipeline, objects: int = 6, noises: int = 32, seed: int = 0) -> Probe:
    base = scenes(objects)
    position, colour = words_apart(pipe, base)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return Probe(
        position_words_apart=round(position, 3),
        colour_words_apart=round(colour, 3),
        centres=first_prediction_centres(pipe, base, noises, seed),
        data_centres=data_centres(base, size, renders=noises, seed=seed),
    )


@torch.no_grad()
def vae_round_trip(pipe: StableDiffusionPipeline, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Per palette colour: (colour error, share of count scenes read right) after the VAE's round trip."""
    rng = random.Random(seed)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    errors: dict[str, list[float]] = {color: [] for color in COLORS}
    right: dict[str, list[bool]] = {color: [] for color in COLORS}
    for scene in (scene for scene in all_scenes() if scene.kind == "count"):
        rendered = render(scene, size, rng)
        # The pipeline's own conversions, in and out, as for the images it draws.
        encoded = pipe.vae.encode(pipe.image_processor.preprocess(rendered))
        decoded = pipe.vae.decode(encoded.latent_dist.mean).sample
        image = np.asarray(pipe.image_processor.postprocess(decoded, output_type="pil")[0])
        pixels = np.asarray(rendered)
        color = scene.objects[0].color
        core = (pixels == COLORS[color]).all(-1)  # the object's own pixels, not their blended edges
        errors[color].append(float(np.abs(image[core].mean(0) - COLORS[color]).max()))
        right[color].append(all(answer is not False for answer in score(scene, image).values()))
    return {color: (float(np.mean(errors[color])), float(np.mean(right[color]))) for color in COLORS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="a shapes pipeline folder")
    parser.add_argument("--objects", type=int, default=6, help="objects per position word")
    parser.add_argument("--noises", type=int, default=32, help="noises averaged per prompt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None)
    found = probe(pipe, args.objects, args.noises, args.seed)
    round_trip = vae_round_trip(pipe, args.seed)
    if args.json:
        lean = {"lean": found.lean, "data_lean": found.data_lean}
        print(json.dumps({**found.__dict__, **lean, "vae_round_trip": round_trip}))
        return
    print(f"{args.model}")
    print(f"  final states apart: position word {found.position_words_apart:.2f}, "
          f"colour word {found.colour_words_apart:.2f}")  # fmt: skip
    print(f"  lean of the first prediction (px): x {found.lean[0]:+.1f}, y {found.lean[1]:+.1f}; "
          f"training scenes: x {found.data_lean[0]:+.1f}, y {found.data_lean[1]:+.1f}")  # fmt: skip
    for place in PLACES:
        (x, y), (dx, dy) = found.centres[place], found.data_centres[place]
        print(f"  {place:>6}: ink centre ({x:5.1f}, {y:5.1f}); training scenes ({dx:5.1f}, {dy:5.1f})")
    print("  VAE round trip of every count scene: colour error (0-255), scenes the scorer reads right")
    for color, (error, share) in round_trip.items():
        print(f"  {color:>6}: {error:5.1f}, {share:.2f}")


if __name__ == "__main__":
    main()
