"""Tiny random-weight pipelines for tests, built from config and saved with ``save_pretrained``.

Nothing here touches the network: the tokenizers are built in memory. Shapes are deliberately odd
(5 CLIP layers, SD 2.x's "!" pad token, hidden sizes that are no power of two, a T5 whose final norm
weights are not all ones) so that hard-coded assumptions fail in tests rather than for users.

    python -m diffusion_lens.fixtures sd OUT_DIR      Stable Diffusion 2.x-shaped
    python -m diffusion_lens.fixtures if OUT_DIR      DeepFloyd IF stage I (16x16, T5 with 4 blocks)
    python -m diffusion_lens.fixtures if-sr OUT_DIR   DeepFloyd IF stage II (16 -> 32)
    python -m diffusion_lens.fixtures pixart OUT_DIR  PixArt-alpha (T5 with 3 blocks, 256x256)
    python -m diffusion_lens.fixtures pixart-sigma OUT_DIR   the same as PixArt-Sigma
    python -m diffusion_lens.fixtures sdxl OUT_DIR    SDXL (two CLIPs with 3 and 5 layers, 32x32)
    python -m diffusion_lens.fixtures flux OUT_DIR    Flux.1-dev-shaped (CLIP pooled, T5 with 3 blocks, 32x32)
    python -m diffusion_lens.fixtures sd3 OUT_DIR     SD3-shaped (CLIPs with 3 and 4 layers, T5 with 3, 32x32)
    python -m diffusion_lens.fixtures sana OUT_DIR    Sana-shaped (Gemma-2 with 3 layers, 32x DC-AE, 512 px)
    python -m diffusion_lens.fixtures clip-scorer OUT_DIR   a CLIPModel and its processor (the clip scorer)
    python -m diffusion_lens.fixtures blip-vqa OUT_DIR      a BlipForQuestionAnswering and its processor (vqa)
    python -m diffusion_lens.fixtures sd OUT.safetensors --single-file   its weights as one file (LDM layout)
    python -m diffusion_lens.fixtures sd OUT.safetensors --lora          random LoRA weights for it
"""

from __future__ import annotations

import argparse
import csv
import re
import string
from pathlib import Path

import torch

from .clip_tokenizer import clip_tokenizer

FIXTURE_SEED = 1234


# The 16x16-latent UNet shape of the SD and SDXL fixtures (each adds its own conditioning).
TINY_LATENT_UNET = {
    "block_out_channels": (8, 16),
    "layers_per_block": 1,
    "sample_size": 16,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
}


def tiny_vae(blocks: int, sample_size: int = 32):
    """A 4-channel latent VAE that downsamples by 2^(blocks - 1)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8,) + (16,) * (blocks - 1),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    )


def tiny_sd_pipeline(num_layers: int = 5, hidden_size: int = 40, seed: int = FIXTURE_SEED):
    """A Stable Diffusion 2.x-shaped pipeline with random weights (CPU, float32)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer = clip_tokenizer(pad_token="!")
    text_encoder = _tiny_clip(tokenizer, num_layers, hidden_size, projection=False)
    unet = UNet2DConditionModel(
        **TINY_LATENT_UNET,
        cross_attention_dim=hidden_size,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = tiny_vae(2)
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


PROMPT_FILES = Path(__file__).resolve().parents[2] / "configs" / "prompts"
T5_HIDDEN = 24
IF_CROSS_ATTENTION = 32  # IF's group-normed cross-attention needs a multiple of 32


def _prompt_words() -> list[str]:
    """The words of the repo's prompt sets (whole-word pieces keep the fixture's prompts short)."""
    words: set[str] = set()
    for path in sorted(PROMPT_FILES.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                words.update(re.findall(r"[a-z]+", row.get("prompt", "").lower()))
    return sorted(words)


def t5_tokenizer():
    """A T5 (unigram) tokenizer built in memory: IF's special tokens (<pad> = 0, </s> = 1, <unk>),
    every printable ASCII character with and without the word-start mark, and the prompt sets' words."""
    from transformers import T5Tokenizer

    characters = sorted(set(string.ascii_letters + string.digits + string.punctuation))
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    pieces += [(c, -6.0) for c in characters] + [("\u2581" + c, -5.0) for c in characters]
    pieces += [("\u2581" + word, -1.0) for word in _prompt_words() if len(word) > 1]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


def tiny_t5_encoder(vocab_size: int, num_layers: int = 4):
    from transformers import T5Config, T5EncoderModel

    encoder = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size,
            d_model=T5_HIDDEN,
            d_kv=6,
            d_ff=40,
            num_layers=num_layers,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
        )
    )
    # T5 initialises norm weights to one, and an RMS norm with unit weights is idempotent: a lens
    # that re-normalised the last hidden state would then go unnoticed.
    with torch.no_grad():
        encoder.encoder.final_layer_norm.weight.uniform_(0.5, 1.5)
    return encoder


def _if_scheduler():
    from diffusers import DDPMScheduler

    # IF's own: cosine betas, learned-range variance, dynamic thresholding.
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        variance_type="learned_range",
        thresholding=True,
        dynamic_thresholding_ratio=0.95,
        sample_max_value=1.5,
        prediction_type="epsilon",
    )


def _if_unet(sample_size: int, in_channels: int, **extra: object):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=6,  # noise and variance for 3 channels
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=IF_CROSS_ATTENTION,
        encoder_hid_dim=T5_HIDDEN,
        attention_head_dim=4,
        addition_embed_type="text",
        addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm",
        resnet_time_scale_shift="scale_shift",
        act_fn="gelu",
        norm_num_groups=4,
        **extra,
    )


def tiny_if_pipeline(num_layers: int = 4, seed: int = FIXTURE_SEED):
    """A DeepFloyd IF stage I-shaped pipeline (16x16 pixels) with random weights."""
    from diffusers import IFPipeline

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    return IFPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(len(tokenizer), num_layers),
        unet=_if_unet(16, 3),
        scheduler=_if_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def tiny_if_sr_pipeline(seed: int = FIXTURE_SEED + 1):
    """A DeepFloyd IF stage II-shaped pipeline (to 32x32). Like the real IF-II checkpoints it ships a
    text encoder, which the lens must not load."""
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    return IFSuperResolutionPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(len(tokenizer)),
        # The upscaled stage-I image joins the noisy image as 3 more channels; the noise level it was
        # augmented with is the class label.
        unet=_if_unet(32, 6, class_embed_type="timestep"),
        scheduler=_if_scheduler(),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )


def tiny_pixart_pipeline(sigma: bool = False, num_layers: int = 3, seed: int = FIXTURE_SEED + 2):
    """A PixArt-alpha (or -Sigma)-shaped pipeline with random weights: T5 (3 blocks), a 2-block DiT with a
    learned variance, a VAE that downsamples by 8. Its transformer's sample_size is 32, the smallest
    that the stock resolution binning knows (256 px), so the stock default runs on it."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    transformer = PixArtTransformer2DModel(
        sample_size=32,
        num_layers=2,
        patch_size=2,
        attention_head_dim=8,
        num_attention_heads=3,
        caption_channels=T5_HIDDEN,
        in_channels=4,
        out_channels=8,  # noise and variance
        cross_attention_dim=24,
        attention_bias=True,
        activation_fn="gelu-approximate",
        num_embeds_ada_norm=1000,
        norm_type="ada_norm_single",
        norm_elementwise_affine=False,
        norm_eps=1e-6,
    )
    pipeline = PixArtSigmaPipeline if sigma else PixArtAlphaPipeline
    return pipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_t5_encoder(len(tokenizer), num_layers),
        vae=tiny_vae(4),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )


def _tiny_clip(tokenizer, num_layers: int, hidden_size: int, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def tiny_sdxl_pipeline(
    layers: tuple[int, int] = (3, 5), seed: int = FIXTURE_SEED + 3, widths: tuple[int, int] = (16, 16)
):
    """An SDXL-shaped pipeline with random weights: two CLIP encoders of different depths (3 and 5
    layers; the second with a projection, whose pooled output conditions the UNet with the time ids),
    a UNet with SDXL's text-time embedding, a VAE that downsamples by 2 (32x32 images). ``widths``: the
    encoders' hidden sizes (diffusers' single-file loader tells SDXL's two CLIPs apart by theirs)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    tokenizer, tokenizer_2 = clip_tokenizer(), clip_tokenizer(pad_token="!")
    unet = UNet2DConditionModel(
        **TINY_LATENT_UNET,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + widths[1],  # six time ids + the pooled vector
        cross_attention_dim=sum(widths),  # both encoders' hidden states, concatenated
        norm_num_groups=4,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        timestep_spacing="leading",
        steps_offset=1,
    )
    return StableDiffusionXLPipeline(
        vae=tiny_vae(2),
        text_encoder=_tiny_clip(tokenizer, layers[0], widths[0], projection=False),
        text_encoder_2=_tiny_clip(tokenizer_2, layers[1], widths[1], projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
    )


def _tiny_flow_vae():
    """The VAE of the flow-matching pipelines (Flux, SD3): no quant convs, a shift factor, scale 2."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )


def tiny_flux_pipeline(num_layers: int = 3, seed: int = FIXTURE_SEED + 4):
    """A Flux.1-shaped pipeline with random weights: CLIP (pooled vector) and T5 (3 blocks) encoders, a
    guidance-embedding (dev-style) transformer with one double and one single block, a one-block VAE
    with 4 latent channels (32x32 images)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    clip_tokens, t5_tokens = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed in 2x2 patches
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=16,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    )
    vae = _tiny_flow_vae()
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_tiny_clip(clip_tokens, 2, 16, projection=False),
        tokenizer=clip_tokens,
        text_encoder_2=tiny_t5_encoder(len(t5_tokens), num_layers),
        tokenizer_2=t5_tokens,
        transformer=transformer,
    )


def tiny_sd3_pipeline(seed: int = FIXTURE_SEED + 5):
    """An SD3-shaped pipeline with random weights: two CLIPs with projections (3 and 4 layers, hidden 8
    and 16: their penultimate states concatenated fill T5's width) and T5 (3 blocks), an MMDiT with one
    block, a VAE with a shift factor (32x32 images)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    clip_1, clip_2, t5_tokens = clip_tokenizer(), clip_tokenizer(pad_token="!"), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=T5_HIDDEN,
        pooled_projection_dim=8 + 16,  # both CLIPs' projections
        pos_embed_max_size=32,
    )
    vae = _tiny_flow_vae()
    return StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_tiny_clip(clip_1, 3, 8, projection=True),
        tokenizer=clip_1,
        text_encoder_2=_tiny_clip(clip_2, 4, 16, projection=True),
        tokenizer_2=clip_2,
        text_encoder_3=tiny_t5_encoder(len(t5_tokens), 3),
        tokenizer_3=t5_tokens,
        transformer=transformer,
    )


def _sana_instruction() -> list[str]:
    """The stock ``SanaPipeline.__call__``'s default complex human instruction."""
    import inspect

    from diffusers import SanaPipeline

    return list(inspect.signature(SanaPipeline.__call__).parameters["complex_human_instruction"].default)


def gemma_tokenizer():
    """A Gemma tokenizer built in memory, shaped as the real one: a BPE with byte fallback (the 256
    ``<0xNN>`` tokens), spaces normalised to the word-start mark with no prefix space, Gemma's special
    tokens (<pad> = 0, <eos> = 1, <bos> = 2, <unk> = 3, <mask> = 4), <bos> prepended and no <eos>, padded
    on the right (as the stock Sana pipeline pads). Trained so that every word of the prompt sets and of
    Sana's stock complex human instruction is one token; other text falls back to characters and bytes."""
    import json

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GemmaTokenizer

    mark = "\u2581"
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"] + [f"<0x{b:02X}>" for b in range(256)]
    alphabet = [*sorted(set(string.ascii_letters + string.digits + string.punctuation + "\n")), mark]
    bpe = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Replace(" ", mark)
    bpe.pre_tokenizer = pre_tokenizers.Split(mark, behavior="merged_with_next")
    trainer = trainers.BpeTrainer(
        vocab_size=100_000, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    text = " " + " ".join(_prompt_words()) + " " + "\n".join(_sana_instruction())
    bpe.train_from_iterator([text], trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return GemmaTokenizer(
        vocab=model["vocab"], merges=merges, add_bos_token=True, add_eos_token=False, padding_side="right"
    )


def tiny_sana_pipeline(num_layers: int = 3, seed: int = FIXTURE_SEED + 6):
    """A Sana-shaped pipeline with random weights: a Gemma-2 decoder (3 layers, hidden 24, its final RMS
    norm's weights not zero, so that a second norm would show), a one-block linear-attention DiT, a DC-AE
    that downsamples by 32 as the real one does, and the stock flow-matching DPM-Solver scheduler. The
    transformer's sample_size is 16 (512 px), the smallest the stock resolution binning knows."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    tokenizer = gemma_tokenizer()
    hidden = 24
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=40,
            num_hidden_layers=num_layers,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=8,
            query_pre_attn_scalar=8,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    # Gemma's RMS norm scales by (1 + weight), weight initialised to zero: idempotent, so a lens that
    # re-normalised the last hidden state would go unnoticed.
    with torch.no_grad():
        text_encoder.norm.weight.uniform_(-0.5, 0.5)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=4,
        num_cross_attention_heads=2,
        cross_attention_head_dim=4,
        cross_attention_dim=8,
        caption_channels=hidden,
        sample_size=16,
    )
    blocks = 6  # 2^(6 - 1) = 32, the real DC-AE's factor
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock",) * (blocks - 1) + ("EfficientViTBlock",),
        decoder_block_types=("ResBlock",) * (blocks - 1) + ("EfficientViTBlock",),
        encoder_block_out_channels=(4,) * (blocks - 1) + (8,),
        decoder_block_out_channels=(4,) * (blocks - 1) + (8,),
        encoder_layers_per_block=(1,) * blocks,
        decoder_layers_per_block=(1,) * blocks,
        encoder_qkv_multiscales=((),) * (blocks - 1) + ((5,),),
        decoder_qkv_multiscales=((),) * (blocks - 1) + ((5,),),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    )
    # The scheduler of the Sana checkpoints: DPM-Solver++ on flow-matching sigmas.
    scheduler = DPMSolverMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=3.0,
        algorithm_type="dpmsolver++",
        solver_order=2,
        beta_schedule="linear",
        beta_start=0.0001,
        beta_end=0.02,
    )
    return SanaPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


class ModelWithProcessor:
    """A transformers model and its processor, saved together into one folder (a scorer's model)."""

    def __init__(self, model, processor) -> None:
        self.model, self.processor = model, processor

    def save_pretrained(self, out: str | Path, safe_serialization: bool = True) -> None:
        self.model.save_pretrained(out)
        self.processor.save_pretrained(out)


SCORER_IMAGE_SIZE = 30  # no power of two: the processors resize 32x32 images to it


def tiny_clip_scorer(seed: int = FIXTURE_SEED + 20) -> ModelWithProcessor:
    """A CLIPModel (text and vision towers of 2 layers, 24 wide, 16-d projections; 30x30 images in
    patches of 6) with its CLIPProcessor, for the clip scorer."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = clip_tokenizer(words=_prompt_words())
    torch.manual_seed(seed)
    common = {"hidden_size": 24, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = CLIPConfig(
        text_config={
            **common,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": tokenizer.model_max_length,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**common, "image_size": SCORER_IMAGE_SIZE, "patch_size": 6},
        projection_dim=16,
    )
    side = {"height": SCORER_IMAGE_SIZE, "width": SCORER_IMAGE_SIZE}
    image_processor = CLIPImageProcessor(size={"shortest_edge": SCORER_IMAGE_SIZE}, crop_size=side)
    return ModelWithProcessor(
        CLIPModel(config).eval(), CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    )


def bert_tokenizer():
    """A BERT (WordPiece) tokenizer built in memory, as BLIP's: its special tokens, BLIP's [DEC] (the answer
    decoder's start), the letters and digits with and without ##, "yes", "no" and the prompt sets' words."""
    from transformers import BertTokenizer

    characters = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "yes", "no"]
    tokens += characters + [f"##{c}" for c in characters]
    tokens += [w for w in _prompt_words() if len(w) > 1 and w not in tokens]
    tokenizer = BertTokenizer(vocab={token: i for i, token in enumerate(tokens)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


def tiny_blip_vqa(seed: int = FIXTURE_SEED + 21) -> ModelWithProcessor:
    """A BlipForQuestionAnswering (vision tower, question encoder and answer decoder of 2 layers, 24 wide;
    30x30 images in patches of 6) with its BlipProcessor, for the vqa scorer."""
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

    tokenizer = bert_tokenizer()
    torch.manual_seed(seed)
    common = {"hidden_size": 24, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = BlipConfig(
        text_config={
            **common,
            "vocab_size": len(tokenizer),
            "encoder_hidden_size": 24,
            "max_position_embeddings": 64,
            "bos_token_id": tokenizer.bos_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**common, "image_size": SCORER_IMAGE_SIZE, "patch_size": 6},
        projection_dim=16,
    )
    image_processor = BlipImageProcessor(size={"height": SCORER_IMAGE_SIZE, "width": SCORER_IMAGE_SIZE})
    return ModelWithProcessor(
        BlipForQuestionAnswering(config).eval(),
        BlipProcessor(image_processor=image_processor, tokenizer=tokenizer),
    )


BUILDERS = {
    "sd": tiny_sd_pipeline,
    "if": tiny_if_pipeline,
    "if-sr": tiny_if_sr_pipeline,
    "pixart": tiny_pixart_pipeline,
    "pixart-sigma": lambda: tiny_pixart_pipeline(sigma=True),
    "sdxl": tiny_sdxl_pipeline,
    "flux": tiny_flux_pipeline,
    "sd3": tiny_sd3_pipeline,
    "sana": tiny_sana_pipeline,
    "clip-scorer": tiny_clip_scorer,
    "blip-vqa": tiny_blip_vqa,
}


def save_single_file(pipe, out_file: str | Path) -> Path:
    """The UNet, VAE and text encoder(s) of an SD or SDXL pipeline as one checkpoint file in the original
    (LDM) layout, as single-file checkpoints are shared: ``.safetensors``, or for ``.ckpt`` a pickled
    ``{"state_dict": ...}``. diffusers' ``from_single_file`` loads it with the pipeline's saved folder as its
    configuration (SDXL: the two CLIPs need different widths, which is how diffusers tells them apart)."""
    from safetensors.torch import save_file

    from .ldm_layout import original_weights

    encoders = [getattr(pipe, name, None) for name in ("text_encoder", "text_encoder_2")]
    if all(encoders) and len({encoder.config.hidden_size for encoder in encoders}) == 1:
        raise ValueError(
            "diffusers tells SDXL's CLIPs apart by width: use tiny_sdxl_pipeline(widths=(16, 24))"
        )
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    weights = {name: value.detach().contiguous() for name, value in original_weights(pipe).items()}
    if out.suffix == ".safetensors":
        save_file(weights, out)
    else:
        torch.save({"state_dict": weights}, out)
    return out


def save_lora(pipe, out_file: str | Path, seed: int = FIXTURE_SEED + 100, rank: int = 2) -> Path:
    """Random LoRA weights (rank ``rank``) for the attention projections of ``pipe``'s UNet and its text
    encoder(s), saved as one ``.safetensors`` file the way diffusers' LoRA training scripts save them
    (``save_lora_weights``). ``pipe`` is left as it was."""
    import copy

    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    layers = {}
    targets = {
        "unet": ["to_q", "to_k", "to_v", "to_out.0"],
        "text_encoder": ["q_proj", "k_proj", "v_proj", "out_proj"],
        "text_encoder_2": ["q_proj", "k_proj", "v_proj", "out_proj"],
    }
    for name, modules in targets.items():
        model = getattr(pipe, name, None)
        if model is None:
            continue
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=modules, init_lora_weights=False)
        adapted = inject_adapter_in_model(config, copy.deepcopy(model))
        layers[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(adapted))
    out = Path(out_file)
    type(pipe).save_lora_weights(out.parent, weight_name=out.name, **layers)
    return out


def save_fixture(kind: str, out_dir: str | Path, safe_serialization: bool = True) -> Path:
    """Build the tiny pipeline ``kind`` and save it to ``out_dir``: safetensors, or with
    ``safe_serialization=False`` pickled ``.bin`` weights where the library still writes them (diffusers
    models; transformers 5 writes safetensors regardless)."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown fixture {kind!r}; choose one of {sorted(BUILDERS)}")
    out = Path(out_dir)
    BUILDERS[kind]().save_pretrained(out, safe_serialization=safe_serialization)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Save a tiny random-weight pipeline for tests.")
    parser.add_argument("kind", choices=sorted(BUILDERS))
    parser.add_argument(
        "out_dir", help="the folder to save the pipeline in (a file with --single-file, --lora)"
    )
    saved = parser.add_mutually_exclusive_group()
    saved.add_argument(
        "--single-file", action="store_true", help="save its weights as one original-layout file (sd, sdxl)"
    )
    saved.add_argument("--lora", action="store_true", help="save random LoRA weights for it (.safetensors)")
    args = parser.parse_args(argv)
    if args.single_file:
        print(save_single_file(BUILDERS[args.kind](), args.out_dir))
    elif args.lora:
        print(save_lora(BUILDERS[args.kind](), args.out_dir))
    else:
        print(save_fixture(args.kind, args.out_dir))


if __name__ == "__main__":
    main()
