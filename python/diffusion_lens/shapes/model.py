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
# Stable Diffusion's noise schedule; the training config picks the prediction type and whether the last
# timestep is rescaled to zero signal. (At zero SNR, turning an epsilon prediction into x0 divides by ~0:
# DPM-Solver and DDIM then sample garbage, so zero terminal SNR needs v-prediction.)
SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "steps_offset": 1,
}


def schedule(prediction_type: str, zero_terminal_snr: bool) -> dict[str, object]:
    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type: {prediction_type!r} is not epsilon or v_prediction")
    if zero_terminal_snr and prediction_type != "v_prediction":
        raise ValueError("zero_terminal_snr needs prediction_type v_prediction")
    return {**SCHEDULE, "prediction_type": prediction_type, "rescale_betas_zero_snr": zero_terminal_snr}


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


def check_unet(bottom: int, conv_in: int) -> None:
    if bottom not in (4, 2):
        raise ValueError(f"unet_bottom: {bottom} is not 4 or 2")
    if conv_in % 2 == 0 or not 1 <= conv_in <= 2 * LATENT_SIZE - 1:
        raise ValueError(f"unet_conv_in: {conv_in} is not an odd kernel size from 1 to {2 * LATENT_SIZE - 1}")


def build_unet(bottom: int = 4, bottom_attention: bool = False, conv_in: int = 3) -> UNet2DConditionModel:
    """The UNet down to ``bottom`` x ``bottom`` (4, or 2: one more level, whose four cells are the four
    quadrants, each told apart by the zero padding it sees); the middle block attends at the bottom, the
    bottom level's own blocks only if ``bottom_attention``.

    ``conv_in`` is the first convolution's kernel size. At 2 x LATENT_SIZE - 1 (31) every output position
    sees a different part of the kernel fall on the zero padding, so even on pure noise the variance of
    its response (and after a nonlinearity its mean) differs from place to place: a dense positional
    signal, where a stock UNet2DConditionModel has no coordinate channels or positional embeddings."""
    check_unet(bottom, conv_in)
    levels = 3 if bottom == 4 else 4
    attends = [True] * (levels - 1) + [bottom_attention]
    return UNet2DConditionModel(
        sample_size=LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        conv_in_kernel=conv_in,
        # The low levels are wide: layout and counts are decided there, and a channel costs least there.
        block_out_channels=(32, 64, 128, 128)[:levels],
        layers_per_block=1,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=8,
        # Per down block (16x16 first; the up blocks mirror it): at 16x16 cross-attention only.
        only_cross_attention=(True, *[False] * (levels - 1)),
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


def training_scheduler(prediction_type: str, zero_terminal_snr: bool) -> DDPMScheduler:
    return DDPMScheduler(**schedule(prediction_type, zero_terminal_snr))


def sampling_scheduler(prediction_type: str, zero_terminal_snr: bool) -> DPMSolverMultistepScheduler:
    """The checkpoint's own scheduler: DPM-Solver++ on the training schedule (good in 20 steps)."""
    return DPMSolverMultistepScheduler(**schedule(prediction_type, zero_terminal_snr))
