"""A diffusers Stable Diffusion (1.x/2.x, XL) pipeline's weights in the original (LDM / A1111) single-file
layout, for test fixtures: what users download as one ``.safetensors`` file.

diffusers converts that layout to its own (``diffusers.loaders.single_file_utils``:
``convert_ldm_unet_checkpoint``, ``convert_ldm_vae_checkpoint``, ``convert_ldm_clip_checkpoint``,
``convert_open_clip_checkpoint``) but has no exporter; this is the inverse of those mappings (as
diffusers' own ``scripts/convert_diffusers_to_original_stable_diffusion.py``, generalised to any number of
blocks and resnets per block so that it serves the tiny fixtures). The tests load the result with
``from_single_file`` and check that every weight comes back unchanged: that makes it a faithful inverse.
"""

from __future__ import annotations

from typing import Any

import torch

Weights = dict[str, torch.Tensor]

_RESNET = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("time_emb_proj", "emb_layers.1"),
    ("conv_shortcut", "skip_connection"),
)
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
}


def _split(key: str, depth: int) -> tuple[list[str], str]:
    parts = key.split(".")
    return parts[:depth], ".".join(parts[depth:])


def _resnet(rest: str) -> str:
    for diffusers_name, ldm_name in _RESNET:
        if rest.startswith(diffusers_name + "."):
            return ldm_name + rest[len(diffusers_name) :]
    raise ValueError(f"unknown resnet weight {rest!r}")


def _unet_key(key: str, layers_per_block: int, up_attention: set[int]) -> str:
    per_block = layers_per_block + 1
    for diffusers_name, ldm_name in _UNET_FIXED.items():
        if key.startswith(diffusers_name + "."):
            return ldm_name + key[len(diffusers_name) :]
    head, rest = _split(key, 4)
    if key.startswith("down_blocks."):
        block, kind, index = int(head[1]), head[2], int(head[3])
        if kind == "resnets":
            return f"input_blocks.{per_block * block + index + 1}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"input_blocks.{per_block * block + index + 1}.1.{rest}"
        if kind == "downsamplers":  # downsamplers.0.conv.weight
            return f"input_blocks.{per_block * (block + 1)}.0.op.{rest.removeprefix('conv.')}"
    if key.startswith("up_blocks."):
        block, kind, index = int(head[1]), head[2], int(head[3])
        if kind == "resnets":
            return f"output_blocks.{per_block * block + index}.0.{_resnet(rest)}"
        if kind == "attentions":
            return f"output_blocks.{per_block * block + index}.1.{rest}"
        if kind == "upsamplers":  # after the block's last resnet (and its attention, when it has one)
            slot = 2 if block in up_attention else 1
            return f"output_blocks.{per_block * block + layers_per_block}.{slot}.{rest}"
    if key.startswith("mid_block."):
        head, rest = _split(key, 3)
        kind, index = head[1], int(head[2])
        if kind == "resnets":
            return f"middle_block.{2 * index}.{_resnet(rest)}"
        if kind == "attentions":
            return f"middle_block.1.{rest}"
    raise ValueError(f"no original-layout name for UNet weight {key!r}")


def unet_weights(unet: Any) -> Weights:
    """The UNet's weights as ``model.diffusion_model.*``."""
    up_attention = {i for i, block in enumerate(unet.up_blocks) if getattr(block, "attentions", None)}
    lpb = int(unet.config.layers_per_block)
    return {
        f"model.diffusion_model.{_unet_key(key, lpb, up_attention)}": value
        for key, value in unet.state_dict().items()
    }


_VAE_ATTENTION = (
    ("group_norm", "norm"),
    ("to_q", "q"),
    ("to_k", "k"),
    ("to_v", "v"),
    ("to_out.0", "proj_out"),
)


def _vae_key(key: str, blocks: int) -> str:
    side, rest = key.split(".", 1)
    if rest.startswith("conv_norm_out."):
        return f"{side}.norm_out.{rest.removeprefix('conv_norm_out.')}"
    head, tail = _split(rest, 4)
    if rest.startswith(("down_blocks.", "up_blocks.")):
        # The decoder's up blocks are numbered from the bottom in the original layout.
        block = int(head[1]) if head[0] == "down_blocks" else blocks - 1 - int(head[1])
        name = "down" if head[0] == "down_blocks" else "up"
        if head[2] == "resnets":
            return f"{side}.{name}.{block}.block.{head[3]}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
        return f"{side}.{name}.{block}.{name}sample.{tail}"  # downsamplers.0.conv.* / upsamplers.0.conv.*
    head, tail = _split(rest, 3)
    if rest.startswith("mid_block.resnets."):
        return f"{side}.mid.block_{int(head[2]) + 1}.{tail.replace('conv_shortcut', 'nin_shortcut')}"
    if rest.startswith("mid_block.attentions.0."):
        for diffusers_name, ldm_name in _VAE_ATTENTION:
            if tail.startswith(diffusers_name + "."):
                return f"{side}.mid.attn_1.{ldm_name}{tail[len(diffusers_name) :]}"
    if side in ("encoder", "decoder") and rest.split(".")[0] in ("conv_in", "conv_out"):
        return key
    if key.split(".")[0] in ("quant_conv", "post_quant_conv"):
        return key
    raise ValueError(f"no original-layout name for VAE weight {key!r}")


def vae_weights(vae: Any) -> Weights:
    """The VAE's weights as ``first_stage_model.*`` (the mid attention's linear weights as 1x1 convs)."""
    blocks = len(vae.config.up_block_types)
    out: Weights = {}
    for key, value in vae.state_dict().items():
        name = _vae_key(key, blocks)
        if ".mid.attn_1." in name and name.endswith(".weight") and value.ndim == 2:
            value = value[:, :, None, None]
        out[f"first_stage_model.{name}"] = value
    return out


def clip_weights(encoder: Any, prefix: str) -> Weights:
    """A Hugging Face CLIP text encoder's weights as the original checkpoints keep them (``prefix`` +
    ``text_model.*``, the transformers layout before 5.6 flattened ``CLIPTextModel``)."""
    state = encoder.state_dict()
    if not hasattr(encoder, "text_model"):
        state = {f"text_model.{key}": value for key, value in state.items()}
    return {f"{prefix}{key}": value for key, value in state.items()}


_OPEN_CLIP = (
    ("layer_norm1", "ln_1"),
    ("layer_norm2", "ln_2"),
    ("mlp.fc1", "mlp.c_fc"),
    ("mlp.fc2", "mlp.c_proj"),
    ("self_attn.out_proj", "attn.out_proj"),
)


def open_clip_weights(encoder: Any, prefix: str) -> Weights:
    """A ``CLIPTextModelWithProjection`` as OpenCLIP keeps it (SDXL's second encoder): ``prefix`` +
    ``transformer.resblocks.*`` with fused q/k/v ``in_proj`` weights, a transposed ``text_projection``."""
    out: Weights = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in encoder.state_dict().items():
        if key == "text_projection.weight":
            out[f"{prefix}text_projection"] = value.T.contiguous()
            continue
        rest = key.removeprefix("text_model.")
        fixed = {
            "embeddings.position_embedding.weight": "positional_embedding",
            "embeddings.token_embedding.weight": "token_embedding.weight",
            "final_layer_norm.weight": "ln_final.weight",
            "final_layer_norm.bias": "ln_final.bias",
        }
        if rest in fixed:
            out[f"{prefix}{fixed[rest]}"] = value
            continue
        if not rest.startswith("encoder.layers."):
            raise ValueError(f"no original-layout name for text encoder weight {key!r}")
        head, tail = _split(rest, 3)
        block = f"{prefix}transformer.resblocks.{head[2]}"
        if tail.startswith("self_attn.") and tail.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
            _, projection, kind = tail.split(".")
            fused.setdefault(f"{block}.attn.in_proj_{kind}", {})[projection] = value
            continue
        for diffusers_name, ldm_name in _OPEN_CLIP:
            if tail.startswith(diffusers_name + "."):
                out[f"{block}.{ldm_name}{tail[len(diffusers_name) :]}"] = value
                break
        else:
            raise ValueError(f"no original-layout name for text encoder weight {key!r}")
    for name, parts in fused.items():
        out[name] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    return out


def original_weights(pipe: Any) -> Weights:
    """The pipeline's UNet, VAE and text encoder(s) as one original-layout state dict: SD 1.x-style
    (``cond_stage_model.transformer``) for one CLIP, SDXL-style (``conditioner.embedders.0/1``) for two."""
    weights = {**unet_weights(pipe.unet), **vae_weights(pipe.vae)}
    if getattr(pipe, "text_encoder_2", None) is None:
        return {**weights, **clip_weights(pipe.text_encoder, "cond_stage_model.transformer.")}
    return {
        **weights,
        **clip_weights(pipe.text_encoder, "conditioner.embedders.0.transformer."),
        **open_clip_weights(pipe.text_encoder_2, "conditioner.embedders.1.model."),
    }
