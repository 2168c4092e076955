"""Load the PyTorch reference: transformers' EdgeTAM, from a hub id, a folder, an original checkpoint or seeds.

Every source ends in the same place, an `EdgeTamVideoModel` (which holds every stage) plus the
`EdgeTamModel` image model on the very same weights and the matching `Sam2Processor`, so the
export, parity and benchmark code never care where the weights came from.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import (
    EdgeTamConfig,
    EdgeTamModel,
    EdgeTamVideoConfig,
    EdgeTamVideoModel,
    EdgeTamVisionConfig,
    Sam2ImageProcessor,
    Sam2Processor,
    Sam2VideoProcessor,
    Sam2VideoVideoProcessor,
    TimmWrapperConfig,
)

from edgetam_export.bundle import RANDOM_SOURCE
from edgetam_export.errors import EdgeTamExportError, short_reason

HUB_IDS = ("yonigozlan/edgetam-1", "facebook/EdgeTAM")
# Output scales of the random weights' heads (see init_random_weights).
MASK_LOGIT_GAIN = 30.0
OBJECT_SCORE_GAIN = 20.0
OBJECT_SCORE_BIAS = 3.0
#: Share of the frame that random weights' tracked masks cover (see calibrate_mask_area).
MASK_AREA = 0.3
OBJECT_SCORE_MARGIN = 6.0


@dataclass(frozen=True)
class ModelSize:
    """The knobs that differ between the real EdgeTAM and the small test configuration."""

    image_size: int
    mlp_dim: int
    perceiver_latents: int

    @property
    def feature_sizes(self) -> list[list[int]]:
        s = self.image_size
        return [[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]]


#: "full" is EdgeTAM as released; "tiny" keeps every code path (RepViT, perceiver 1D + 2D latents,
#: RoPE memory attention) at 256x256 input and narrow MLPs so tests run in seconds on two cores.
MODEL_SIZES: dict[str, ModelSize] = {
    "full": ModelSize(image_size=1024, mlp_dim=2048, perceiver_latents=256),
    "tiny": ModelSize(image_size=256, mlp_dim=256, perceiver_latents=16),
}


def build_video_config(size: str = "full", **overrides: object) -> EdgeTamVideoConfig:
    """EdgeTAM's real configuration (RepViT-M1 backbone), or its tiny variant; `overrides` set any other
    `EdgeTamVideoConfig` field (e.g. transformers' defaults for the pointer temporal encoding).

    `EdgeTamVideoConfig()` alone would build a SAM 2 Hiera encoder, and `EdgeTamConfig()` a resnet50
    (a typo in transformers' default), so the RepViT backbone is spelled out here.
    """
    if size not in MODEL_SIZES:
        raise EdgeTamExportError(f"unknown model size '{size}': choose one of {', '.join(MODEL_SIZES)}")
    s = MODEL_SIZES[size]
    backbone = TimmWrapperConfig(
        architecture="repvit_m1",
        do_pooling=False,
        model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]},
    )
    vision = EdgeTamVisionConfig(backbone_config=backbone, backbone_feature_sizes=s.feature_sizes)
    grid = s.image_size // 16
    latent_grid = int(math.isqrt(s.perceiver_latents))
    settings = dict(
        vision_config=vision,
        prompt_encoder_config={"image_size": s.image_size},
        mask_decoder_config={"mlp_dim": s.mlp_dim},
        image_size=s.image_size,
        # As in the released checkpoint (facebookresearch/EdgeTAM sam2/configs/edgetam.yaml).
        enable_temporal_pos_encoding_for_object_pointers=False,
        enable_occlusion_spatial_embedding=False,
        memory_attention_mlp_hidden_size=s.mlp_dim,
        memory_attention_rope_feat_sizes=[grid, grid],
        memory_attention_rope_k_sizes=[latent_grid, latent_grid],
        perceiver_resampler_num_latents=s.perceiver_latents,
        perceiver_resampler_num_latents_2d=s.perceiver_latents,
        memory_fuser_intermediate_dim=4 * s.mlp_dim // 2 if size == "tiny" else 1024,
    )
    unknown = sorted(set(overrides) - set(EdgeTamVideoConfig().to_dict())) if overrides else []
    if unknown:
        raise EdgeTamExportError(f"unknown EdgeTamVideoConfig fields {unknown}")
    return EdgeTamVideoConfig(**(settings | overrides))


def image_config_from_video(config: EdgeTamVideoConfig) -> EdgeTamConfig:
    """The image-only `EdgeTamConfig` that shares the video model's encoder, prompt encoder and decoder."""
    return EdgeTamConfig(
        vision_config=config.vision_config.to_dict(),
        prompt_encoder_config=config.prompt_encoder_config.to_dict(),
        mask_decoder_config=config.mask_decoder_config.to_dict(),
    )


@torch.no_grad()
def init_random_weights(model: EdgeTamVideoModel, seed: int) -> None:
    """Seeded, scale-preserving random weights, every parameter and buffer drawn on its own.

    transformers' own init gives image embeddings near 1e-9 and empty video masks, which would make
    any parity figure meaningless; PyTorch's layer defaults plus random norm parameters, BatchNorm
    statistics and order-one free parameters keep activations of order one through the whole network.
    No two tensors are left equal (norm weights of ones, copied matrices): weights that tie what a
    checkpoint may keep apart would hide code that reads the wrong one (see `tie_like_released_checkpoint`).
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for module in model.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.normal_(0.0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
        for name, param in module.named_parameters(recurse=False):
            if _is_norm(module):  # ones and zeros after reset: scales near 1, shifts near 0
                param.uniform_(0.5, 1.5, generator=generator) if name == "weight" else param.normal_(
                    0.0, 0.1, generator=generator)
            elif not hasattr(module, "reset_parameters"):
                # Free parameters: learned tokens, layer scales, temporal encodings.
                param.normal_(0.0, 0.5, generator=generator)
        if hasattr(module, "positional_embedding") and isinstance(module.positional_embedding, torch.Tensor):
            module.positional_embedding.normal_(0.0, 1.0, generator=generator)
    # Trained heads are decisive: mask logits of several units and objects mostly present. Without
    # this, random masks hover around 0 and thresholding turns float noise into flipped pixels.
    decoder = model.mask_decoder
    for mlp in decoder.output_hypernetworks_mlps:
        mlp.proj_out.weight.mul_(MASK_LOGIT_GAIN)
    calibrate_mask_area(model, MASK_AREA)
    decoder.pred_obj_score_head.proj_out.weight.mul_(OBJECT_SCORE_GAIN)
    decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)


def calibrate_mask_area(model: EdgeTamVideoModel, area: float, rounds: int = 3) -> None:
    """Give random weights tracked masks of about `area` of the frame, as trained weights have.

    Random heads make most mask logits positive (tracked masks of 65-90% of the frame, depending on the
    seed), and then a wrong memory bank barely changes a mask. A constant is added to every mask logit
    (`_set_mask_logit_bias`) and chosen on a short synthetic video: frame 0 clicked in its centre, two
    frames tracked with memory, the constant moved so that `area` of the last frame's logits are
    positive (three rounds, because the masks feed the memory that conditions the next frames); token 0,
    the single-mask output, gets its own constant from the clicked frame.
    """
    model.eval()
    size = model.config.image_size
    frames = [_calibration_frame(size, shift) for shift in range(3)]
    processor = build_video_processor(size)
    bias = 0.0
    _set_mask_logit_bias(model.mask_decoder, bias)
    decoder = model.mask_decoder
    scores: list[torch.Tensor] = []
    inputs: list[dict] = []  # the decoder's inputs, call by call
    hook = decoder.register_forward_hook(lambda module, args, outputs: scores.append(outputs[3]))
    record = decoder.register_forward_pre_hook(lambda module, args, kwargs: inputs.append(kwargs), with_kwargs=True)
    try:
        for _ in range(rounds):
            session = processor.init_video_session(video=frames, inference_device="cpu")
            processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=0,
                                                      input_points=[[[[size / 2, size / 2]]]], input_labels=[[[1]]])
            inputs.clear()
            model(inference_session=session, frame_idx=0)
            clicked = inputs[0]
            *_, last = model.propagate_in_video_iterator(session, start_frame_idx=1)
            # a tracked object is present: its score at least OBJECT_SCORE_MARGIN on every frame
            # Shifts are rounded to 1/64: float sums differ in the last bits with the thread count, and the
            # weights (and their checksum) must not.
            missing = _rounded(OBJECT_SCORE_MARGIN - float(torch.cat(scores).min()))
            model.mask_decoder.pred_obj_score_head.proj_out.bias.add_(max(missing, 0.0))
            scores.clear()
            if missing <= 0:
                bias -= _rounded(float(torch.quantile(last.pred_masks.flatten().float(), 1.0 - area)))
                _set_mask_logit_bias(decoder, bias)
    finally:
        hook.remove()
        record.remove()
    # Token 0 (single-mask output, its own hypernetwork) on the clicked frame, calibrated alone: the shared
    # bias can leave it empty, and single-mask predictions must segment something too.
    stability, decoder.dynamic_multimask_via_stability = decoder.dynamic_multimask_via_stability, False
    try:
        single = decoder(**(clicked | {"multimask_output": False}))[0]
    finally:
        decoder.dynamic_multimask_via_stability = stability
    _set_mask_logit_bias(decoder, bias - _rounded(float(torch.quantile(single.flatten().float(), 1.0 - area))), tokens=[0])


def _is_norm(module: nn.Module) -> bool:
    """Normalization layers (BatchNorm, LayerNorm, GroupNorm, transformers' channels-first LayerNorms)."""
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)) or (
        "LayerNorm" in type(module).__name__)


@torch.no_grad()
def tie_like_released_checkpoint(model: EdgeTamVideoModel) -> None:
    """Store one Gaussian matrix for prompts and the image-wide encoding, as the released `edgetam.pt` does
    (its conversion copies it; `convert_original_state_dict`)."""
    model.shared_image_embedding.positional_embedding.copy_(model.prompt_encoder.shared_embedding.positional_embedding)


def _rounded(value: float, step: float = 1 / 64) -> float:
    return round(value / step) * step


def _calibration_frame(size: int, shift: int) -> Image.Image:
    """A smooth random picture (8x8 colour cells, bilinearly enlarged; the same for every model), moved
    by `shift` steps: a short video without data files."""
    cells = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    picture = torch.nn.functional.interpolate(cells, size=(size, size + 8), mode="bilinear")[0]
    pixels = (picture[:, :, 4 * shift : 4 * shift + size].permute(1, 2, 0) * 255).to(torch.uint8).numpy()
    return Image.fromarray(pixels)


def _set_mask_logit_bias(decoder: nn.Module, bias: float, tokens: list[int] | None = None) -> None:
    """Add `bias` to every mask logit through transformers' own computation.

    Mask logits are `hyper_in @ upscaled_embedding`, with no bias term. The last channel of the upscaled
    embedding is made constant (its upscaling weights and its high-resolution projection zeroed, its
    bias 1, so it is GELU(1) everywhere) and each hypernetwork (of `tokens`; default all) emits a
    constant for that channel.
    """
    channel = decoder.upscale_conv2.out_channels - 1
    decoder.upscale_conv2.weight[:, channel] = 0.0
    decoder.upscale_conv2.bias[channel] = 1.0
    decoder.conv_s0.weight[channel] = 0.0
    decoder.conv_s0.bias[channel] = 0.0
    constant = float(torch.nn.functional.gelu(torch.tensor(1.0)))
    for token, mlp in enumerate(decoder.output_hypernetworks_mlps):
        if tokens is None or token in tokens:
            mlp.proj_out.weight[channel] = 0.0
            mlp.proj_out.bias[channel] = bias / constant


def build_processor(image_size: int) -> Sam2Processor:
    """The `Sam2Processor` that matches a model's input size (1024 for the real EdgeTAM)."""
    image_processor = Sam2ImageProcessor(
        size={"height": image_size, "width": image_size},
        mask_size={"height": image_size // 4, "width": image_size // 4},
    )
    return Sam2Processor(image_processor=image_processor)


def build_video_processor(image_size: int) -> Sam2VideoProcessor:
    """The `Sam2VideoProcessor` that matches a model's input size, for the video reference."""
    return Sam2VideoProcessor(
        image_processor=build_processor(image_size).image_processor,
        video_processor=Sam2VideoVideoProcessor(size={"height": image_size, "width": image_size}),
    )


@dataclass
class Reference:
    """The PyTorch reference on one set of weights."""

    video_model: EdgeTamVideoModel
    image_model: EdgeTamModel
    processor: Sam2Processor
    source: str
    size: str = "full"
    seed: int | None = None
    #: `EdgeTamVideoConfig` fields a random variant was built with (see `random_reference`).
    config_overrides: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """How to load these weights again (written into bundle manifests)."""
        return {
            "source": self.source,
            "size": self.size,
            "seed": self.seed,
            "config_sha256": self.config_hash(),
            "weights_sha256": self.weights_hash(),
        } | ({"config_overrides": self.config_overrides} if self.config_overrides else {})

    @property
    def config(self) -> EdgeTamVideoConfig:
        return self.video_model.config

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    def config_hash(self) -> str:
        """sha256 of the model configuration, to tie a bundle to the weights' architecture."""
        text = json.dumps(self.config.to_diff_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def weights_hash(self) -> str:
        """sha256 over every parameter and buffer, to tie a bundle to the exact weights."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.video_model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
        return digest.hexdigest()


def _finish(
    video_model: EdgeTamVideoModel, source: str, size: str = "full", seed: int | None = None,
    config_overrides: dict | None = None,
) -> Reference:
    video_model = video_model.eval()
    image_model = EdgeTamModel(image_config_from_video(video_model.config)).eval()
    shared = {k: v for k, v in video_model.state_dict().items() if k in image_model.state_dict()}
    missing, _ = image_model.load_state_dict(shared, strict=False)
    if missing:
        raise EdgeTamExportError(f"image model weights missing from '{source}': {missing[:3]}")
    processor = build_processor(int(video_model.config.image_size))
    return Reference(video_model, image_model, processor, source=source, size=size, seed=seed,
                     config_overrides=dict(config_overrides or {}))


def random_reference(seed: int = 0, size: str = "full", **overrides: object) -> Reference:
    """A reference with seeded random weights (no pretrained EdgeTAM weights can be downloaded here);
    `overrides` build a variant (see `build_video_config`)."""
    model = EdgeTamVideoModel(build_video_config(size, **overrides))
    init_random_weights(model, seed)
    return _finish(model, RANDOM_SOURCE, size, seed, overrides)


# Original facebookresearch/EdgeTAM checkpoint layout -> transformers layout. Each rule is a regex
# substitution applied in order to every key; the layout is that of the released `edgetam.pt`.
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
    return _finish(model, str(path), size)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face Hub answers a TCP connection within `timeout` seconds.

    Without this, an offline `from_pretrained` retries for about 23 s, printing a line per retry.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _hub_cached(source: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(source, "config.json"), str)


def load_pretrained(source: str) -> Reference:
    """Load a local Hugging Face model folder or a hub id through `from_pretrained`."""
    local = Path(source).is_dir()
    if not local and not _hub_cached(source) and not _hub_reachable():
        raise EdgeTamExportError(
            f"could not fetch '{source}' from the Hugging Face Hub (no network, and no cached copy); "
            "download it on a connected machine and pass its folder, or pass --model random"
        )
    try:
        model = EdgeTamVideoModel.from_pretrained(source, local_files_only=local)
    except OSError as exc:
        if local:
            raise EdgeTamExportError(
                f"'{source}' is not a usable EdgeTAM model folder ({short_reason(str(exc).splitlines()[0])}); "
                "it needs config.json and model.safetensors written by save_pretrained"
            ) from None
        raise EdgeTamExportError(
            f"could not fetch '{source}' from the Hugging Face Hub (no network, or no such model); "
            "download it on a connected machine and pass its folder, or pass --model random"
        ) from None
    return _finish(model, source)


def load_reference(source: str, *, seed: int = 0, size: str = "full", config_overrides: dict | None = None) -> Reference:
    """One entry point for every weight source: 'random' (a variant with `config_overrides`), a folder, a
    checkpoint file, or a hub id."""
    if source == RANDOM_SOURCE:
        return random_reference(seed, size, **(config_overrides or {}))
    path = Path(source)
    if path.is_dir():
        return load_pretrained(source)
    if path.suffix in (".pt", ".pth", ".ckpt", ".safetensors"):
        if not path.is_file():
            raise EdgeTamExportError(f"checkpoint '{source}' does not exist; check the path given to --model")
        return load_original_checkpoint(path, size)
    if path.exists():
        raise EdgeTamExportError(
            f"'{source}' is neither a model folder nor a checkpoint (.pt, .pth, .ckpt, .safetensors)"
        )
    if "/" in source and not source.startswith((".", "/")) and source.count("/") == 1:
        return load_pretrained(source)
    raise EdgeTamExportError(
        f"model '{source}' not found: pass 'random', a folder, an edgetam.pt checkpoint or a hub id "
        f"such as {HUB_IDS[0]}"
    )
