"""Test helper: write a transformers EdgeTAM state dict back in the original facebookresearch layout.

Written independently of `edgetam_export.reference` (which maps original -> transformers), from the
original module names: sam_prompt_encoder, sam_mask_decoder, obj_ptr_proj, fuser, to_kv, ...
"""

from __future__ import annotations

import re

import torch

_HEAD = r"(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+|object_pointer_proj)"

_RULES = [
    (r"^vision_encoder\.backbone\.timm_model\.", "image_encoder.trunk.body."),
    (r"^vision_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv."),
    (r"^prompt_encoder\.shared_embedding\.positional_embedding$",
     "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"),
    (r"^prompt_encoder\.mask_embed\.conv1\.", "sam_prompt_encoder.mask_downscaling.0."),
    (r"^prompt_encoder\.mask_embed\.layer_norm1\.", "sam_prompt_encoder.mask_downscaling.1."),
    (r"^prompt_encoder\.mask_embed\.conv2\.", "sam_prompt_encoder.mask_downscaling.3."),
    (r"^prompt_encoder\.mask_embed\.layer_norm2\.", "sam_prompt_encoder.mask_downscaling.4."),
    (r"^prompt_encoder\.mask_embed\.conv3\.", "sam_prompt_encoder.mask_downscaling.6."),
    (r"^prompt_encoder\.", "sam_prompt_encoder."),
    (r"^mask_decoder\.upscale_conv1\.", "sam_mask_decoder.output_upscaling.0."),
    (r"^mask_decoder\.upscale_layer_norm\.", "sam_mask_decoder.output_upscaling.1."),
    (r"^mask_decoder\.upscale_conv2\.", "sam_mask_decoder.output_upscaling.3."),
    (r"^mask_decoder\.", "sam_mask_decoder."),
    (r"(transformer\.layers\.\d+)\.mlp\.proj_in\.", r"\1.mlp.layers.0."),
    (r"(transformer\.layers\.\d+)\.mlp\.proj_out\.", r"\1.mlp.layers.1."),
    (_HEAD + r"\.layers\.0\.", r"\1.layers.1."),
    (_HEAD + r"\.proj_in\.", r"\1.layers.0."),
    (_HEAD + r"\.proj_out\.", r"\1.layers.2."),
    (r"^object_pointer_proj\.", "obj_ptr_proj."),
    (r"^no_memory_embedding$", "no_mem_embed"),
    (r"^no_memory_positional_encoding$", "no_mem_pos_enc"),
    (r"^no_object_pointer$", "no_obj_ptr"),
    (r"^memory_temporal_positional_encoding$", "maskmem_tpos_enc"),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.up_proj\.", r"\1.linear1."),
    (r"^(memory_attention\.layers\.\d+)\.mlp\.down_proj\.", r"\1.linear2."),
    (r"^memory_encoder\.feature_projection\.", "memory_encoder.pix_feat_proj."),
    (r"^memory_encoder\.projection\.", "memory_encoder.out_proj."),
    (r"^memory_encoder\.memory_fuser\.", "memory_encoder.fuser."),
    (r"\.depthwise_conv\.", ".dwconv."),
    (r"\.pointwise_conv(\d)\.", r".pwconv\1."),
    (r"(fuser\.layers\.\d+)\.scale$", r"\1.gamma"),
    (r"^spatial_perceiver\.latents_1d$", "spatial_perceiver.latents"),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_input\.", r"\1.attn.norm_x."),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_latents\.", r"\1.attn.norm_latents."),
    (r"^(spatial_perceiver\.layers\.\d+)\.layer_norm_self\.", r"\1.self_attn.norm."),
    (r"^(spatial_perceiver\.layers\.\d+)\.cross_attention\.", r"\1.attn."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_attention\.", r"\1.self_attn."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.layer_norm\.", r"\1.ff.0."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.up_proj\.", r"\1.ff.1."),
    (r"^(spatial_perceiver\.layers\.\d+)\.mlp\.down_proj\.", r"\1.ff.3."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.layer_norm\.", r"\1.self_ff.0."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.up_proj\.", r"\1.self_ff.1."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_mlp\.down_proj\.", r"\1.self_ff.3."),
    (r"^(spatial_perceiver\.layers\.\d+\.(attn|self_attn))\.q_proj\.", r"\1.to_q."),
    (r"^(spatial_perceiver\.layers\.\d+\.(attn|self_attn))\.o_proj\.", r"\1.to_out."),
    (r"\.o_proj\.", ".out_proj."),
    (r"\.layer_norm(\d|_final_attn)?\.", lambda m: f".norm{m.group(1) or ''}."),
]


def to_original_layout(state_dict: dict[str, torch.Tensor], num_downsampler_layers: int) -> dict:
    original: dict[str, torch.Tensor] = {}
    pending_kv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        if key == "shared_image_embedding.positional_embedding" or key.endswith(("position_ids", "position_ids_k")):
            continue
        if key == "prompt_encoder.point_embed.weight":
            for i in range(value.shape[0]):
                original[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1].clone()
            continue
        downsampler = re.match(r"^memory_encoder\.mask_downsampler\.(layers\.(\d+)\.(conv|layer_norm)|final_conv)\.(.*)$", key)
        if downsampler:
            if downsampler.group(1) == "final_conv":
                index = 3 * num_downsampler_layers
            else:
                index = 3 * int(downsampler.group(2)) + (0 if downsampler.group(3) == "conv" else 1)
            original[f"memory_encoder.mask_downsampler.encoder.{index}.{downsampler.group(4)}"] = value
            continue
        new_key = key
        rules = _RULES[:1] if key.startswith("vision_encoder.backbone.") else _RULES
        for pattern, replacement in rules:
            new_key = re.sub(pattern, replacement, new_key)
        kv = re.match(r"^(spatial_perceiver\.layers\.\d+\.(attn|self_attn))\.(k|v)_proj\.(.*)$", new_key)
        if kv:
            pending_kv.setdefault(f"{kv.group(1)}.to_kv.{kv.group(4)}", {})[kv.group(3)] = value
            continue
        original[new_key] = value
    for key, parts in pending_kv.items():
        original[key] = torch.cat([parts["k"], parts["v"]], dim=0)
    return original
