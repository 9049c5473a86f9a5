"""The shapes model's architecture: a Stable-Diffusion-shaped pipeline small enough to train on two
CPU cores. A CLIP text encoder trained from scratch (12 layers, like SD 1.x's, so the lens has depth to
look at), a UNet on 16x16x4 latents, and a small VAE (32x32 RGB <-> 16x16x4).

Self-attention runs where it is cheap and where layout is decided: at 8x8 and 4x4 (64 and 16 tokens), so
objects can place themselves relative to each other ("above", two colours on two shapes). At 16x16 the
UNet's transformer blocks cross-attend twice instead (``only_cross_attention``): there, 256-token
self-attention would cost more than half of each CPU training step. Positions come from the convolutions'
zero padding, which every UNet level below 16x16 sees across the whole latent.
"""

from __future__ import annotations

from diffusers import AutoencoderKL, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from ..clip_tokenizer import clip_tokenizer
from .world import vocabulary

IMAGE_SIZE = 32
LATENT_SIZE = 16
MAX_TOKENS = 16  # BOS + the longest prompt (about 11 words) + EOS, padded
TEXT_LAYERS = 12
TEXT_WIDTH = 128
# Stable Diffusion's noise schedule. (A cosine schedule drives alpha_bar to ~0 at the last timestep,
# where turning an epsilon prediction into x0 divides by ~0: DPM-Solver and DDIM then sample garbage.)
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "prediction_type": "epsilon",
    "steps_offset": 1,
}


def build_tokenizer() -> CLIPTokenizer:
    return clip_tokenizer(model_max_length=MAX_TOKENS, words=vocabulary())


def build_text_encoder(tokenizer: CLIPTokenizer) -> CLIPTextModel:
    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=TEXT_WIDTH,
            intermediate_size=4 * TEXT_WIDTH,
            num_hidden_layers=TEXT_LAYERS,
            num_attention_heads=4,
            max_position_embeddings=MAX_TOKENS,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def build_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        # The 4x4 level is wide: it is where layout and counts are decided, and costs least per channel.
        block_out_channels=(32, 64, 128),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
        # Per down block (16x16, 8x8, 4x4; the up blocks mirror it): self-attention below 16x16 only.
        only_cross_attention=(True, False, False),
        mid_block_only_cross_attention=False,
    )


def build_vae() -> AutoencoderKL:
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def training_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**SCHEDULE)


def sampling_scheduler() -> DPMSolverMultistepScheduler:
    """The checkpoint's own scheduler: DPM-Solver++ on the training schedule (good in 20 steps)."""
    return DPMSolverMultistepScheduler(**SCHEDULE)
