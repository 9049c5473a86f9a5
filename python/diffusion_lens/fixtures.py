"""Tiny random-weight pipelines for tests, built from config and saved with ``save_pretrained``.

Nothing here touches the network: the tokenizers are built in memory. Shapes are deliberately odd
(5 encoder layers, SD 2.x's "!" pad token, a hidden size that is no power of two) so that hard-coded
assumptions fail in tests rather than for users.

    python -m diffusion_lens.fixtures sd OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from .clip_tokenizer import clip_tokenizer

FIXTURE_SEED = 1234


def tiny_sd_pipeline(num_layers: int = 5, hidden_size: int = 40, seed: int = FIXTURE_SEED):
    """A Stable Diffusion 2.x-shaped pipeline with random weights (CPU, float32)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(pad_token="!")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length,
            layer_norm_eps=1e-5,
            hidden_act="gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=hidden_size,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


BUILDERS = {"sd": tiny_sd_pipeline}


def save_fixture(kind: str, out_dir: str | Path) -> Path:
    """Build the tiny pipeline ``kind`` and save it (safetensors) to ``out_dir``."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown fixture {kind!r}; choose one of {sorted(BUILDERS)}")
    out = Path(out_dir)
    BUILDERS[kind]().save_pretrained(out, safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a tiny random-weight pipeline for tests.")
    parser.add_argument("kind", choices=sorted(BUILDERS))
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    print(save_fixture(args.kind, args.out_dir))


if __name__ == "__main__":
    main()
