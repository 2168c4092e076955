"""Stage 1, `image_encoder`: RepViT backbone + FPN neck, once per image or video frame."""

from __future__ import annotations

import copy

import torch
from timm.utils import reparameterize_model
from torch import nn
from transformers import EdgeTamVideoModel

from edgetam_export.stages.spec import IMAGE_INPUT, IMAGE_MEAN, IMAGE_STD, StageShapes, StageSpec, TensorSpec

NAME = "image_encoder"


def _statistics() -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) tensors."""
    return torch.tensor(IMAGE_MEAN).reshape(1, 3, 1, 1), torch.tensor(IMAGE_STD).reshape(1, 3, 1, 1)


def image_from_pixel_values(pixel_values: torch.Tensor) -> torch.Tensor:
    """Undo the processor's normalization: the 0..255 RGB pixels an `image` input takes."""
    mean, std = _statistics()
    return (pixel_values * std + mean) * 255.0


def pixel_values_from_image(image: torch.Tensor) -> torch.Tensor:
    mean, std = _statistics()
    return (image / 255.0 - mean) / std


def spec(shapes: StageShapes) -> StageSpec:
    s, c, e = shapes.image_size, shapes.hidden_size, shapes.embed_size
    if shapes.image_input:
        pixels = TensorSpec(
            IMAGE_INPUT,
            (1, 3, s, s),
            "float32",
            f"RGB image resized to {s}x{s} (bilinear), pixel values 0..255, NCHW; the ImageNet normalization "
            "is inside the stage. A Core ML package takes it as an RGB image (CVPixelBuffer, CGImage).",
        )
    else:
        pixels = TensorSpec(
            "pixel_values",
            (1, 3, s, s),
            "float32",
            f"RGB image resized to {s}x{s} (bilinear), scaled to [0,1], normalized with ImageNet "
            f"mean {IMAGE_MEAN} and std {IMAGE_STD}; NCHW.",
        )
    return StageSpec(
        name=NAME,
        description="RepViT-M1 image encoder and FPN neck; run once per image or frame.",
        inputs=(pixels,),
        outputs=(
            TensorSpec(
                "image_embeddings",
                (1, c, e, e),
                "float32",
                "Lowest-resolution FPN features plus the learned no-memory embedding: the decoder's image "
                "input for a still image or an initial conditioning frame.",
            ),
            TensorSpec(
                "vision_features",
                (1, c, e, e),
                "float32",
                "The same FPN features without the no-memory embedding: input of memory_encoder and "
                "memory_attention on video frames.",
            ),
            TensorSpec(
                "high_res_features_0",
                (1, c // 8, 4 * e, 4 * e),
                "float32",
                "Stride-4 features already projected by the decoder's conv_s0 (computed once per image).",
            ),
            TensorSpec(
                "high_res_features_1",
                (1, c // 4, 2 * e, 2 * e),
                "float32",
                "Stride-8 features already projected by the decoder's conv_s1.",
            ),
        ),
        max_objects=shapes.max_objects,
    )


class ImageEncoderStage(nn.Module):
    """RepViT backbone + FPN + the decoder's high-resolution projections.

    The backbone is re-parameterized for inference (timm's `fuse`): every BatchNorm folded into its
    convolution and each RepVGG block's parallel depthwise 3x3, 1x1 and identity branches merged into one
    3x3 convolution. Same function to float rounding, 23 fewer convolutions and no BatchNorm to lower,
    and int8 recipes quantize one convolution per layer instead of one per branch.

    Shapes:
        pixels: (1, 3, S, S) float32, normalized (or 0..255 with `shapes.image_input`)
        -> image_embeddings (1, 256, S/16, S/16), vision_features (1, 256, S/16, S/16),
           high_res_features_0 (1, 32, S/4, S/4), high_res_features_1 (1, 64, S/8, S/8)
    """

    def __init__(self, model: EdgeTamVideoModel, shapes: StageShapes) -> None:
        super().__init__()
        self.vision_encoder = copy.deepcopy(model.vision_encoder)
        reparameterize_model(self.vision_encoder.backbone, inplace=True)
        self.conv_s0 = model.mask_decoder.conv_s0
        self.conv_s1 = model.mask_decoder.conv_s1
        self.no_memory_embedding = nn.Parameter(model.no_memory_embedding.detach().reshape(1, -1, 1, 1).clone())
        self.normalizes = shapes.image_input
        if self.normalizes:  # (x / 255 - mean) / std as one multiply-add per channel
            mean, std = _statistics()
            self.register_buffer("pixel_scale", 1.0 / (255.0 * std))
            self.register_buffer("pixel_offset", -mean / std)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.normalizes:
            pixels = pixels * self.pixel_scale + self.pixel_offset
        fpn = self.vision_encoder(pixels, return_dict=True).fpn_hidden_states
        vision_features = fpn[2]
        return (
            vision_features + self.no_memory_embedding,
            vision_features,
            self.conv_s0(fpn[0]),
            self.conv_s1(fpn[1]),
        )


@torch.no_grad()
def upstream(model: EdgeTamVideoModel, shapes: StageShapes, inputs: dict[str, torch.Tensor]) -> dict:
    """transformers' own path: `get_image_features` and the no-memory embedding of `_single_frame_forward`."""
    pixel_values = inputs["pixel_values"] if "pixel_values" in inputs else pixel_values_from_image(inputs[IMAGE_INPUT])
    features = model.get_image_features(pixel_values, return_dict=True).fpn_hidden_states
    sizes = model.backbone_feature_sizes

    def to_nchw(flat: torch.Tensor, size: list[int]) -> torch.Tensor:
        return flat.permute(1, 2, 0).reshape(1, -1, *size)

    vision = to_nchw(features[2], sizes[2])
    return {
        "image_embeddings": to_nchw(features[2] + model.no_memory_embedding, sizes[2]),
        "vision_features": vision,
        "high_res_features_0": to_nchw(features[0], sizes[0]),
        "high_res_features_1": to_nchw(features[1], sizes[1]),
    }
