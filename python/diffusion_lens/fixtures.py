"""Tiny random-weight pipelines for tests, built from config and saved with ``save_pretrained``.

Nothing here touches the network: the tokenizers are built in memory. Shapes are deliberately odd
(5 encoder layers, SD 2.x's "!" pad token, a non-square latent channel count is not possible, but a
hidden size that is no power of two is) so hard-coded assumptions fail in tests rather than for users.

    python -m diffusion_lens.fixtures sd OUT_DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

FIXTURE_SEED = 1234
# A byte-level BPE with no merges tokenises any text; CLIP's tokenizer needs every byte symbol
# both as a word piece and with the end-of-word suffix.
CLIP_BOS, CLIP_EOS = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode symbols."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    symbols = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            symbols.append(256 + extra)
            extra += 1
    return [chr(s) for s in symbols]


def clip_tokenizer(pad_token: str = "!", model_max_length: int = 77):
    """An offline CLIP tokenizer: 256 byte symbols, each also with ``</w>``, plus BOS/EOS."""
    from transformers import CLIPTokenizer

    vocab: dict[str, int] = {}
    for symbol in _bytes_to_unicode():
        vocab[symbol] = len(vocab)
    for symbol in _bytes_to_unicode():
        vocab[symbol + "</w>"] = len(vocab)
    vocab[CLIP_BOS] = len(vocab)
    vocab[CLIP_EOS] = len(vocab)
    tokenizer = CLIPTokenizer(
        vocab=vocab,
        merges=[],
        unk_token=CLIP_EOS,
        bos_token=CLIP_BOS,
        eos_token=CLIP_EOS,
        pad_token=pad_token,
    )
    tokenizer.model_max_length = model_max_length
    return tokenizer


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
