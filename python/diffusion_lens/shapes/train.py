"""Train the shapes model: ``python -m diffusion_lens.shapes.train`` (writes the repo's models/shapes).

Two stages, both seeded and resumable from ``--work-dir`` (kill it at any point and run the same
command again): a small VAE on rendered training images, then the text encoder and UNet together on
the VAE's latents (v-prediction, the token loss that keeps the encoder's words apart, classifier-free
guidance dropout, min-SNR-capped loss weights, an EMA of the weights).
The EMA weights are exported as a diffusers pipeline (safetensors) that loads with
``StableDiffusionPipeline.from_pretrained`` like any checkpoint. Only training-split scenes are seen.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from transformers import CLIPTokenizer

from ..devices import resolve_device
from . import model as shapes_model
from .render import layout_rules, render
from .world import KINDS, is_heldout, sample_scene

DEFAULT_OUT = Path(__file__).resolve().parents[3] / "models" / "shapes"
DEFAULT_WORK_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffusion-lens" / "shapes-train"
)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    dataset_size: int = 80_000
    # How often each kind of scene is drawn: scenes of several objects (binding, layout, counting) are
    # the hard ones; version 5 drew counts 20% and relations 40%, and missed the count target.
    weight_single: float = 0.4
    weight_count: float = 0.3
    weight_relation: float = 0.3
    vae_steps: int = 2_000
    vae_lr: float = 1e-3
    unet_steps: int = 11_000
    unet_lr: float = 8e-4
    warmup: int = 300
    batch: int = 64
    cfg_dropout: float = 0.1
    # What the UNet predicts ("epsilon" or "v_prediction") and whether the schedule's last timestep is
    # pure noise (zero terminal SNR, Lin et al. 2024; needs v-prediction). See loss_weights.
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = False
    # The UNet's lowest resolution (4 or 2), whether its blocks there attend, and the kernel size of its
    # first convolution (see model.build_unet).
    unet_bottom: int = 4
    bottom_attention: bool = False
    unet_conv_in: int = 3
    # Weight of an auxiliary loss that keeps every word readable from the text encoder's final layer: a
    # linear head (used in training only, not exported) reads each token back from its final state.
    # Trained through the UNet alone, the encoder merges the words the UNet does not use yet ("left" and
    # "right" in v2) before the UNet can learn them; CLIP's own text encoder keeps them from its
    # contrastive pretraining. See the model card's "Why positions failed in version 2".
    token_loss: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        # Refuse bad settings before any work: the same checks as the builders'.
        shapes_model.schedule(self.prediction_type, self.zero_terminal_snr)
        shapes_model.check_unet(self.unet_bottom, self.unet_conv_in)
        if not self.token_loss >= 0:
            raise ValueError(f"token_loss: {self.token_loss} is not a weight >= 0")


# The settings only the text encoder + UNet stage reads: changing them keeps the work dir's scenes and VAE.
UNET_STAGE_FIELDS = frozenset(
    {
        "unet_steps", "unet_lr", "warmup", "cfg_dropout", "prediction_type", "zero_terminal_snr",
        "unet_bottom", "bottom_attention", "unet_conv_in", "token_loss",
        "min_snr_gamma", "ema_decay", "checkpoint_every",
    }
)  # fmt: skip


# Settings added after v2's training: a work dir recorded before them ran with these values.
ADDED_AFTER_V2 = {
    "prediction_type": "epsilon", "zero_terminal_snr": False, "unet_bottom": 4, "bottom_attention": False,
    "unet_conv_in": 3, "token_loss": 0.0,
}  # fmt: skip


# The layout rules of the scenes in a work dir recorded before they were (version 5's and earlier).
RULES_BEFORE_V6 = {"small": 9, "large": 13, "edge_margin": 1, "min_gap": 2}


def check_work_dir(work: Path, config: TrainConfig) -> None:
    """Records the run's settings and the renderer's layout rules in the work dir, refusing settings or
    rules its cached stages were not made with (changed UNet-stage settings are taken before that stage
    has started)."""
    recorded = work / "config.json"
    rules = layout_rules(shapes_model.IMAGE_SIZE)
    if recorded.exists():
        saved = json.loads(recorded.read_text())
        rendered_with = saved.pop("layout_rules", RULES_BEFORE_V6)
        if rendered_with != rules and (work / "dataset.pt").exists():
            differ = ", ".join(sorted(k for k in rules if rendered_with.get(k) != rules[k]))
            raise SystemExit(
                f"{work} holds scenes rendered with other layout rules ({differ}); use another --work-dir"
            )
        before = {**ADDED_AFTER_V2, **saved}
        changed = sorted(field for field, value in asdict(config).items() if before.get(field) != value)
        if changed and (not UNET_STAGE_FIELDS.issuperset(changed) or (work / "unet.pt").exists()):
            raise SystemExit(
                f"{work} holds a run with other {', '.join(changed)}; use another --work-dir or --seed"
            )
        if changed:
            log(f"{work}: keeping its scenes and VAE; the UNet stage takes the new {', '.join(changed)}")
    recorded.write_text(json.dumps({**asdict(config), "layout_rules": rules}, indent=2) + "\n")


def log(message: str) -> None:
    print(f"[shapes-train {time.strftime('%H:%M:%S')}] {message}", flush=True)


def save_atomic(obj: Any, path: Path) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, temporary)
    os.replace(temporary, path)


def load_or_build_tokenizer(work: Path) -> CLIPTokenizer:
    """The run's tokenizer, built once and kept in the work dir: a resumed run reads its cached token ids
    with the tokenizer that made them, even if the tokenizer's code has changed meanwhile."""
    path = work / "tokenizer"
    if path.exists():
        return CLIPTokenizer.from_pretrained(path)
    tokenizer = shapes_model.build_tokenizer()
    staging = work / "tokenizer.partial"
    shutil.rmtree(staging, ignore_errors=True)
    tokenizer.save_pretrained(staging)
    os.replace(staging, path)
    return tokenizer


def build_dataset(config: TrainConfig, tokenizer, path: Path) -> dict[str, torch.Tensor]:
    """Rendered training scenes (uint8 images) and their token ids; cached in the work dir."""
    if path.exists():
        return torch.load(path)
    rng = random.Random(config.seed)
    weights = (config.weight_single, config.weight_count, config.weight_relation)
    images = np.empty((config.dataset_size, shapes_model.IMAGE_SIZE, shapes_model.IMAGE_SIZE, 3), np.uint8)
    prompts = []
    for index in range(config.dataset_size):
        scene = sample_scene(rng, "train", KINDS, weights)
        assert not is_heldout(scene)
        images[index] = np.asarray(render(scene, shapes_model.IMAGE_SIZE, rng))
        prompts.append(scene.prompt)
        if (index + 1) % 10_000 == 0:
            log(f"rendered {index + 1}/{config.dataset_size} training scenes")
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids  # fmt: skip
    dataset = {"images": torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), "ids": ids}
    save_atomic(dataset, path)
    return dataset


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


class Progress:
    def __init__(self, stage: str, start: int, total: int) -> None:
        self.stage, self.start, self.total = stage, start, total
        self.began = time.perf_counter()
        self.loss: torch.Tensor | None = None

    def update(self, step: int, loss: torch.Tensor, every: int = 50) -> None:
        # Smoothed on the loss's device and read only when printed: no wait for a GPU at every step.
        loss = loss.detach()
        self.loss = loss if self.loss is None else 0.98 * self.loss + 0.02 * loss
        if step % every and step != self.total:
            return
        rate = (step - self.start) / max(time.perf_counter() - self.began, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("nan")
        loss = self.loss.item()
        log(f"{self.stage} {step}/{self.total} loss {loss:.4f} {rate:.2f} it/s, {eta / 60:.1f} min left")


def learning_rate(base: float, at: int, total: int, warmup: int = 0) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 10% of ``base`` at ``total``."""
    warm = min(1.0, (at + 1) / warmup) if warmup else 1.0
    cosine = 0.55 + 0.45 * np.cos(np.pi * min(at / total, 1.0))
    return float(base * warm * cosine)  # a numpy float would not load with weights_only


def train_vae(config: TrainConfig, images: torch.Tensor, work: Path, device: str = "cpu"):
    torch.manual_seed(config.seed + 1)  # weight initialisation, whatever ran before in this process
    vae = shapes_model.build_vae().to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    generator = torch.Generator().manual_seed(config.seed + 1)
    step, path = 0, work / "vae.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu")
        vae.load_state_dict(state["vae"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = state["step"]
        log(f"vae: resuming at step {step}")
    progress = Progress("vae", step, config.vae_steps)
    while step < config.vae_steps:
        # Random draws come from CPU generators on every device, so a GPU run sees the same batches.
        index = torch.randint(len(images), (config.batch,), generator=generator)
        batch = to_unit_range(images[index].to(device))
        posterior = vae.encode(batch).latent_dist
        reconstruction = vae.decode(posterior.sample(generator)).sample
        loss = (reconstruction - batch).pow(2).mean() + 1e-6 * posterior.kl().mean()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config.vae_lr, step, config.vae_steps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        progress.update(step, loss)
        if step % config.checkpoint_every == 0 or step == config.vae_steps:
            state = {"vae": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
            save_atomic({**state, "generator": generator.get_state()}, path)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, path: Path) -> tuple[torch.Tensor, float]:
    """Posterior means of every training image (on the CPU), and the scaling factor that gives them unit
    variance. The VAE may be on any device."""
    if path.exists():
        state = torch.load(path)
        return state["latents"], state["scaling_factor"]
    device = next(vae.parameters()).device
    chunks = [
        vae.encode(to_unit_range(images[i : i + 512].to(device))).latent_dist.mean.cpu()
        for i in range(0, len(images), 512)
    ]
    latents = torch.cat(chunks)
    scaling_factor = float(1.0 / latents.std())
    save_atomic({"latents": latents, "scaling_factor": scaling_factor}, path)
    return latents, scaling_factor


def loss_weights(scheduler, timesteps: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Per-item weights of the prediction's squared error. Written as weights on the error of the implied
    clean latent x0: epsilon-prediction with min-SNR gives min(snr, gamma), which all but ignores the
    noisiest timesteps (snr ~0.005 at the last one), where an image's layout is decided. V-prediction
    gives them weight 1: min(max(snr, 1), gamma) ("truncated SNR", Salimans & Ho 2022, capped by min-SNR,
    Hang et al. 2023). A v error costs x0 error times (snr + 1), an epsilon error times snr."""
    alphas = scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    if prediction_type == "v_prediction":
        return torch.clamp(snr, min=1.0, max=gamma) / (snr + 1)
    return torch.clamp(snr, max=gamma) / snr


def step_loss(
    unet,
    scheduler,
    clean: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    states: torch.Tensor,
    tokens: torch.Tensor,
    token_head: torch.nn.Module | None,
    token_loss: float,
    gamma: float,
) -> torch.Tensor:
    """One training step's loss: the UNet's weighted prediction error on the noised latents (the
    scheduler's prediction type; see loss_weights), plus, with a token head, the token loss: the head
    reading each token back from the text encoder's final states (cross-entropy)."""
    prediction_type = scheduler.config.prediction_type
    prediction = unet(
        scheduler.add_noise(clean, noise, timesteps), timesteps, encoder_hidden_states=states
    ).sample
    target = scheduler.get_velocity(clean, noise, timesteps) if prediction_type == "v_prediction" else noise
    per_item = (prediction - target).pow(2).mean(dim=(1, 2, 3))
    loss = (per_item * loss_weights(scheduler, timesteps, gamma, prediction_type)).mean()
    if token_head is not None:
        read_back = torch.nn.functional.cross_entropy(token_head(states).flatten(0, 1), tokens.flatten())
        loss = loss + token_loss * read_back
    return loss


def train_unet(
    config: TrainConfig,
    latents: torch.Tensor,
    scaling_factor: float,
    ids: torch.Tensor,
    tokenizer,
    work: Path,
    deadline: float,
    device: str = "cpu",
):
    torch.manual_seed(config.seed + 2)  # weight initialisation (on the CPU, whatever the device)
    text_encoder = shapes_model.build_text_encoder(tokenizer)
    unet = shapes_model.build_unet(config.unet_bottom, config.bottom_attention, config.unet_conv_in)
    ema_text, ema_unet = (
        copy.deepcopy(text_encoder).requires_grad_(False),
        copy.deepcopy(unet).requires_grad_(False),
    )
    # Built (and drawn from the seed) only when used, so a run without it initialises as before.
    token_head = torch.nn.Linear(shapes_model.TEXT_WIDTH, len(tokenizer)) if config.token_loss else None
    for module in (text_encoder, unet, ema_text, ema_unet, token_head):
        if module is not None:
            module.to(device)
    parameters = [*text_encoder.parameters(), *unet.parameters()]
    if token_head is not None:
        parameters += list(token_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=config.unet_lr, weight_decay=0.01)
    scheduler = shapes_model.training_scheduler(config.prediction_type, config.zero_terminal_snr)
    generator = torch.Generator().manual_seed(config.seed + 3)
    empty = tokenizer(
        [""], padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    step, path = 0, work / "unet.pt"
    if path.exists():
        state = torch.load(path, map_location="cpu")
        for module, key in (
            (text_encoder, "text"),
            (unet, "unet"),
            (ema_text, "ema_text"),
            (ema_unet, "ema_unet"),
            (token_head, "token_head"),
        ):
            if module is not None:
                module.load_state_dict(state[key])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        step = state["step"]
        log(f"unet: resuming at step {step}")

    progress = Progress("unet", step, config.unet_steps)
    while step < config.unet_steps and time.monotonic() < deadline:
        index = torch.randint(len(latents), (config.batch,), generator=generator)
        tokens = ids[index].clone()
        dropped = torch.rand(config.batch, generator=generator) < config.cfg_dropout
        tokens[dropped] = empty
        clean = latents[index] * scaling_factor  # the pipeline decodes latents / scaling_factor
        noise = torch.randn(clean.shape, generator=generator)
        timesteps = torch.randint(scheduler.config.num_train_timesteps, (config.batch,), generator=generator)
        clean, noise, timesteps, tokens = (t.to(device) for t in (clean, noise, timesteps, tokens))
        hidden = text_encoder(tokens).last_hidden_state
        loss = step_loss(
            unet, scheduler, clean, noise, timesteps, hidden, tokens, token_head, config.token_loss,
            config.min_snr_gamma,
        )  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config.unet_lr, step, config.unet_steps, config.warmup)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        step += 1
        decay = min(config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_text, text_encoder), (ema_unet, unet)):
                torch._foreach_lerp_(list(ema.parameters()), list(live.parameters()), 1 - decay)
        progress.update(step, loss)
        if step % config.checkpoint_every == 0 or step == config.unet_steps or time.monotonic() >= deadline:
            save_atomic(
                {
                    "text": text_encoder.state_dict(), "unet": unet.state_dict(),
                    "ema_text": ema_text.state_dict(), "ema_unet": ema_unet.state_dict(),
                    "optimizer": optimizer.state_dict(), "generator": generator.get_state(), "step": step,
                    **({"token_head": token_head.state_dict()} if token_head is not None else {}),
                },
                path,
            )  # fmt: skip
    return ema_text, ema_unet, step


def export(
    out: Path,
    config: TrainConfig,
    tokenizer,
    text_encoder,
    unet,
    vae,
    scaling_factor: float,
    info: dict[str, Any],
) -> None:
    vae = copy.deepcopy(vae)
    vae.register_to_config(scaling_factor=scaling_factor)
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=shapes_model.sampling_scheduler(config.prediction_type, config.zero_terminal_snr),
        safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )  # fmt: skip
    staging = out.with_name(out.name + ".partial")
    pipe.save_pretrained(staging, safe_serialization=True)
    (staging / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    if out.exists():
        for child in staging.iterdir():  # keep files that are not the model's (e.g. the model card)
            target = out / child.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(child, target)
        staging.rmdir()
    else:
        os.replace(staging, out)
    log(f"exported the pipeline to {out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where the diffusers pipeline goes")
    parser.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR), help="checkpoints, for resuming")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--device",
        default="auto",
        help="where to train: auto (a GPU if torch sees one, else the CPU), cpu, cuda, mps. Every device "
        "draws the same batches, noise and initial weights (CPU generators)",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop the UNet stage after this long, export, resume later",
    )
    for field, value in asdict(TrainConfig()).items():
        flag = f"--{field.replace('_', '-')}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        elif field == "prediction_type":
            parser.add_argument(flag, choices=("epsilon", "v_prediction"), default=value)
        else:
            parser.add_argument(flag, type=type(value), default=value)
    return parser


def config_of(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{field.name: getattr(args, field.name) for field in fields(TrainConfig)})


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_of(args)
    except ValueError as error:
        parser.error(str(error))
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        parser.error(f"--device: {error}")
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work_dir).expanduser() / f"seed{config.seed}"
    work.mkdir(parents=True, exist_ok=True)
    check_work_dir(work, config)

    started = time.perf_counter()
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else float("inf")
    tokenizer = load_or_build_tokenizer(work)
    dataset = build_dataset(config, tokenizer, work / "dataset.pt")
    log(f"training on {device}")
    vae = train_vae(config, dataset["images"], work, device)
    latents, scaling_factor = encode_latents(vae, dataset["images"], work / "latents.pt")
    text_encoder, unet, step = train_unet(
        config, latents, scaling_factor, dataset["ids"], tokenizer, work, deadline, device
    )
    info = {
        "config": asdict(config),
        "unet_steps_done": step,
        "scaling_factor": scaling_factor,
        "seconds_this_run": round(time.perf_counter() - started),
        "device": torch.cuda.get_device_name() if device == "cuda" else device,
        "torch_threads": torch.get_num_threads(),
    }
    text_encoder, unet, vae = (module.cpu() for module in (text_encoder, unet, vae))
    export(Path(args.out), config, tokenizer, text_encoder, unet, vae, scaling_factor, info)


if __name__ == "__main__":
    main()
