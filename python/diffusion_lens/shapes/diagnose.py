"""Which part of the shapes model keeps it from placing objects by the position word: the text encoder
or the UNet? Short trainings of the real UNet on single-object scenes, each with another way to read the
prompt, watched by the probe's "lean" (how far the UNet's first prediction of the clean image moves
between "at the left" and "at the right", "at the top" and "at the bottom"):

    python -m diffusion_lens.shapes.diagnose --arm NAME [--steps 800] [--every 100]

Arms (``ARMS``): ``table-*`` read the prompt through a plain table of token and position embeddings (the
UNet sees every word apart, nothing mixed), ``clip-*`` through the shapes model's 12-layer CLIP text
encoder, trained with the UNet, frozen at its initialisation, or trained with the token loss
(``train.TrainConfig.token_loss``). To be quick (about 0.6 s a step on one core) the "latents" are the
rendered scenes average-pooled to 16x16 (RGB and their mean, standardised) instead of the VAE's; the
UNet, noise schedule, loss weights and optimiser are the training script's. Prints one JSON line per
``--every`` steps: the loss, the lean (latent pixels; the scenes' own is about 8), the ink centre per
position word, and the distance between the final states of a left and a right prompt ("words apart").
"""

from __future__ import annotations

import argparse
import json
import random
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import model as shapes_model
from .probe import OBJECTS, PLACES, Probe, ink_centre, mean_centres, predicted_clean, scenes
from .render import render
from .train import TrainConfig, step_loss
from .world import Scene, sample_scene


@dataclass(frozen=True)
class Arm:
    reader: str  # "table" or "clip"
    prediction_type: str
    encoder_lr: float = 1.0  # times the UNet's learning rate (0: frozen)
    token_loss: float = 0.0


ARMS = {
    "table-epsilon": Arm("table", "epsilon"),
    "table-v": Arm("table", "v_prediction"),
    "clip-v": Arm("clip", "v_prediction"),
    "clip-v-frozen": Arm("clip", "v_prediction", encoder_lr=0.0),
    "clip-v-token-loss": Arm("clip", "v_prediction", token_loss=0.1),
}


class TableReader(torch.nn.Module):
    """Token plus position embeddings, nothing mixed: every word reaches the UNet apart."""

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(vocabulary, shapes_model.TEXT_WIDTH)
        self.positions = torch.nn.Embedding(shapes_model.MAX_TOKENS, shapes_model.TEXT_WIDTH)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.tokens(ids) + self.positions.weight[None, : ids.shape[1]]


def pooled_scenes(count: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    rng = random.Random(seed)
    images, prompts = [], []
    for _ in range(count):
        scene = sample_scene(rng, "train", ("single",))
        images.append(np.asarray(render(scene, shapes_model.IMAGE_SIZE, rng)))
        prompts.append(scene.prompt)
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    pooled = F.avg_pool2d(pixels, shapes_model.IMAGE_SIZE // shapes_model.LATENT_SIZE)
    return torch.cat([pooled, pooled.mean(1, keepdim=True)], 1), prompts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arm", required=True, choices=list(ARMS))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--every", type=int, default=100, help="probe every this many steps")
    parser.add_argument("--scenes", type=int, default=12_000, help="rendered training scenes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    arm = ARMS[args.arm]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    tokenizer = shapes_model.build_tokenizer()

    def token_ids(prompts: list[str]) -> torch.Tensor:
        return tokenizer(
            prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        ).input_ids  # fmt: skip

    latents, prompts = pooled_scenes(args.scenes, args.seed)
    mean, std = latents.mean(), latents.std()
    latents, ids, empty = (latents - mean) / std, token_ids(prompts), token_ids([""])

    encoder = (
        TableReader(len(tokenizer)) if arm.reader == "table" else shapes_model.build_text_encoder(tokenizer)
    )

    def read(batch_ids: torch.Tensor) -> torch.Tensor:
        out = encoder(batch_ids)
        return out if arm.reader == "table" else out.last_hidden_state

    token_head = torch.nn.Linear(shapes_model.TEXT_WIDTH, len(tokenizer)) if arm.token_loss else None
    unet = shapes_model.build_unet()
    scheduler = shapes_model.training_scheduler(arm.prediction_type, False)
    groups = [
        {"params": [*unet.parameters(), *(token_head.parameters() if token_head else [])], "scale": 1.0},
        {"params": list(encoder.parameters()), "scale": arm.encoder_lr},
    ]
    optimizer = torch.optim.AdamW(groups, lr=8e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed + 1)
    probe_ids = {place: token_ids([s.prompt for s in scenes(6) if s.position == place]) for place in PLACES}
    left, right = token_ids([Scene("single", (OBJECTS[0],), position=p).prompt for p in ("left", "right")])

    @torch.no_grad()
    def probe() -> dict[str, object]:
        unet.eval()
        noise = torch.randn((16, 4, shapes_model.LATENT_SIZE, shapes_model.LATENT_SIZE),
                            generator=torch.Generator().manual_seed(5))  # fmt: skip
        t = scheduler.config.num_train_timesteps - 1
        alpha = scheduler.alphas_cumprod[t]
        found: dict[str, list[tuple[float, float]]] = {place: [] for place in PLACES}
        for place, place_ids in probe_ids.items():
            for prompt_ids in place_ids:
                states = read(prompt_ids[None]).expand(len(noise), -1, -1)
                out = unet(noise, torch.full((len(noise),), t), encoder_hidden_states=states).sample
                clean = predicted_clean(arm.prediction_type, alpha, noise, out)
                found[place].append(ink_centre((clean * std + mean).mean(0)[:3].numpy()))
        unet.train()
        centres = mean_centres(found)
        apart = float((read(left[None]) - read(right[None])).norm())
        lean_x, lean_y = Probe.leans(centres)
        return {"lean_x": round(lean_x, 2), "lean_y": round(lean_y, 2), "words_apart": round(apart, 2),
                "centres": centres}  # fmt: skip

    began = time.perf_counter()
    for step in range(1, args.steps + 1):
        index = torch.randint(len(latents), (args.batch,), generator=generator)
        batch_ids = ids[index].clone()
        batch_ids[torch.rand(args.batch, generator=generator) < 0.1] = empty
        clean = latents[index]
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (args.batch,), generator=generator)
        loss = step_loss(
            unet, scheduler, clean, noise, timesteps, read(batch_ids), batch_ids, token_head, arm.token_loss,
            TrainConfig.min_snr_gamma,
        )  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = 8e-4 * group["scale"] * min(1.0, step / 100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        if step % args.every == 0 or step == args.steps:
            found = {"arm": args.arm, "step": step, "loss": round(loss.item(), 4), **probe(),
                     "seconds": round(time.perf_counter() - began)}  # fmt: skip
            print(json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
