"""The reference model itself: EdgeTAM's configuration (full and tiny), the matching processors, and `Reference`,
the video model plus the image model on the very same weights."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field

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

from edgetam_export.errors import EdgeTamExportError

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


def reference_from_model(
    video_model: EdgeTamVideoModel, source: str, size: str = "full", seed: int | None = None,
    config_overrides: dict | None = None,
) -> Reference:
    """A `Reference` over loaded video-model weights: the image model gets the very same tensors."""
    video_model = video_model.eval()
    image_model = EdgeTamModel(image_config_from_video(video_model.config)).eval()
    shared = {k: v for k, v in video_model.state_dict().items() if k in image_model.state_dict()}
    missing, _ = image_model.load_state_dict(shared, strict=False)
    if missing:
        raise EdgeTamExportError(f"image model weights missing from '{source}': {missing[:3]}")
    processor = build_processor(int(video_model.config.image_size))
    return Reference(video_model, image_model, processor, source=source, size=size, seed=seed,
                     config_overrides=dict(config_overrides or {}))
