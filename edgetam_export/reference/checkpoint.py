"""Original facebookresearch/EdgeTAM checkpoints (`edgetam.pt`), converted to the transformers layout."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from transformers import EdgeTamVideoModel

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.reference.model import Reference, reference_from_model, build_video_config

_THREE_LAYER_HEADS = r"(iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+|obj_ptr_proj)"
_ORIGINAL_KEY_RULES: list[tuple[str, str]] = [
    (r"^image_encoder\.trunk\.body\.", "vision_encoder.backbone.timm_model."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"^sam_prompt_encoder\.pe_layer\.positional_encoding_gaussian_matrix$",
     "prompt_encoder.shared_embedding.positional_embedding"),
    (r"^sam_prompt_encoder\.mask_downscaling\.0\.", "prompt_encoder.mask_embed.conv1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.1\.", "prompt_encoder.mask_embed.layer_norm1."),
    (r"^sam_prompt_encoder\.mask_downscaling\.3\.", "prompt_encoder.mask_embed.conv2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.4\.", "prompt_encoder.mask_embed.layer_norm2."),
    (r"^sam_prompt_encoder\.mask_downscaling\.6\.", "prompt_encoder.mask_embed.conv3."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.output_upscaling\.0\.", "mask_decoder.upscale_conv1."),
    (r"^sam_mask_decoder\.output_upscaling\.1\.", "mask_decoder.upscale_layer_norm."),
    (r"^sam_mask_decoder\.output_upscaling\.3\.", "mask_decoder.upscale_conv2."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),
    (r"\.mlp\.layers\.1\.", ".mlp.proj_out."),
    (_THREE_LAYER_HEADS + r"\.layers\.0\.", r"\1.proj_in."),
    (_THREE_LAYER_HEADS + r"\.layers\.2\.", r"\1.proj_out."),
    (_THREE_LAYER_HEADS + r"\.layers\.1\.", r"\1.layers.0."),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"\.linear1\.", ".mlp.up_proj."),
    (r"\.linear2\.", ".mlp.down_proj."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.gamma$", ".scale"),
    (r"^spatial_perceiver\.latents$", "spatial_perceiver.latents_1d"),
    (r"\.attn\.norm_x\.", ".layer_norm_input."),
    (r"\.attn\.norm_latents\.", ".layer_norm_latents."),
    (r"\.self_attn\.norm\.", ".layer_norm_self."),
    (r"^(spatial_perceiver\.layers\.\d+)\.attn\.", r"\1.cross_attention."),
    (r"^(spatial_perceiver\.layers\.\d+)\.self_attn\.", r"\1.self_attention."),
    (r"\.(ff|self_ff)\.0\.", lambda m: f".{'mlp' if m.group(1) == 'ff' else 'self_mlp'}.layer_norm."),
    (r"\.(ff|self_ff)\.1\.", lambda m: f".{'mlp' if m.group(1) == 'ff' else 'self_mlp'}.up_proj."),
    (r"\.(ff|self_ff)\.3\.", lambda m: f".{'mlp' if m.group(1) == 'ff' else 'self_mlp'}.down_proj."),
    (r"\.to_q\.", ".q_proj."),
    (r"\.to_out\.", ".o_proj."),
    (r"\.out_proj\.", ".o_proj."),
    (r"\.norm(\d|_final_attn)?\.", lambda m: f".layer_norm{m.group(1) or ''}."),
]


def convert_original_state_dict(state_dict: dict[str, torch.Tensor], num_downsampler_layers: int) -> dict:
    """Rename an original facebookresearch/EdgeTAM state dict into transformers' EdgeTamVideoModel layout.

    The backbone keys (`image_encoder.trunk.body.*`) are timm's own and pass through unchanged.
    """
    converted: dict[str, torch.Tensor] = {}
    point_embeddings: dict[int, torch.Tensor] = {}
    for key, value in state_dict.items():
        downsampler = re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(.*)$", key)
        if downsampler:
            # One Sequential of (conv, norm, activation) triples, then a final 1x1 conv.
            index, rest = int(downsampler.group(1)), downsampler.group(2)
            part = "conv" if index % 3 == 0 else "layer_norm"
            layer = "final_conv" if index == 3 * num_downsampler_layers else f"layers.{index // 3}.{part}"
            converted[f"memory_encoder.mask_downsampler.{layer}.{rest}"] = value
            continue
        new_key = key
        # timm's backbone keys keep their names; only their prefix changes.
        rules = _ORIGINAL_KEY_RULES[:1] if key.startswith("image_encoder.trunk.") else _ORIGINAL_KEY_RULES
        for pattern, replacement in rules:
            new_key = re.sub(pattern, replacement, new_key)
        point = re.match(r"^prompt_encoder\.point_embeddings\.(\d)\.weight$", new_key)
        if point:
            point_embeddings[int(point.group(1))] = value
        elif ".to_kv." in new_key:
            converted[new_key.replace(".to_kv.", ".k_proj.")], converted[new_key.replace(".to_kv.", ".v_proj.")] = (
                torch.chunk(value, 2, dim=0)
            )
        else:
            converted[new_key] = value
    if point_embeddings:
        converted["prompt_encoder.point_embed.weight"] = torch.cat(
            [point_embeddings[i] for i in sorted(point_embeddings)], dim=0
        )
    if "prompt_encoder.shared_embedding.positional_embedding" in converted:
        converted["shared_image_embedding.positional_embedding"] = converted[
            "prompt_encoder.shared_embedding.positional_embedding"
        ]
    return converted


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """Read weights without executing code: safetensors, or torch.load(weights_only=True)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        payload = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types (UnpicklingError, KeyError, RuntimeError...)
        text = str(exc)
        if "Unsupported global" in text or "GLOBAL" in text:
            raise EdgeTamExportError(
                f"refusing to load checkpoint '{path}': it contains Python objects beyond tensors, and "
                "loading it could run code; re-save it as a plain state dict or safetensors"
            ) from None
        raise EdgeTamExportError(
            f"checkpoint '{path}' is corrupt or not a PyTorch checkpoint ({short_reason(exc)}); "
            "download it again or pass another --model"
        ) from None
    if isinstance(payload, dict) and "model" in payload and isinstance(payload["model"], dict):
        payload = payload["model"]
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise EdgeTamExportError(
            f"checkpoint '{path}' holds no state dict of tensors (expected {{'model': state_dict}}); "
            "pass an original edgetam.pt"
        )
    return payload


def load_original_checkpoint(path: Path, size: str = "full") -> Reference:
    """Load an original facebookresearch `edgetam.pt` (keys in the original layout) into transformers."""
    state_dict = _read_checkpoint(path)
    config = build_video_config(size)
    model = EdgeTamVideoModel(config)
    num_layers = len(model.memory_encoder.mask_downsampler.layers)
    converted = convert_original_state_dict(state_dict, num_layers)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in converted and not k.endswith(("position_ids", "position_ids_k")))
    unexpected = sorted(k for k in converted if k not in expected)
    if missing or unexpected:
        raise EdgeTamExportError(
            f"checkpoint '{path}' does not match EdgeTAM ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); pass an original edgetam.pt"
        )
    shapes = [k for k in converted if converted[k].shape != expected[k].shape]
    if shapes:
        raise EdgeTamExportError(
            f"checkpoint '{path}' has tensors of the wrong shape for the '{size}' EdgeTAM "
            f"configuration (e.g. {shapes[0]}); pass the matching --size"
        )
    model.load_state_dict(converted, strict=False)
    return reference_from_model(model, str(path), size)
