"""Stage 3, `memory_encoder`: memory encoder + 2D Spatial Perceiver, once per tracked frame and object.

It turns a frame's features and an object's predicted mask into a fixed number of memory tokens
(global 1D latents followed by the 2D window latents), which the host stores in its memory bank.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import EdgeTamVideoModel

from edgetam_export.stages.common import (
    AveragingChannelNorm,
    BandedDepthwiseConv,
    BilinearUpsample,
    StageForm,
    contiguous_buffer,
    pointwise_conv,
    positive,
)
from edgetam_export.stages.spec import OBJECTS, StageShapes, StageSpec, TensorSpec

NAME = "memory_encoder"


def spec(shapes: StageShapes) -> StageSpec:
    c, e, m, d, t = (
        shapes.hidden_size,
        shapes.embed_size,
        shapes.low_res_mask_size,
        shapes.memory_dim,
        shapes.memory_tokens,
    )
    return StageSpec(
        name=NAME,
        description="Memory encoder (mask downsampler + fuser) and the 2D Spatial Perceiver: compresses a "
        "frame's features and an object's mask into memory tokens.",
        inputs=(
            TensorSpec("vision_features", (1, c, e, e), "float32", "image_encoder.vision_features of the frame."),
            TensorSpec(
                "mask_logits",
                (OBJECTS, 1, m, m),
                "float32",
                "The selected low-resolution mask logits of each object (-1024 everywhere where "
                "object_score_logits <= 0, as the reference does); upsampled inside the stage.",
            ),
            TensorSpec("object_score_logits", (OBJECTS, 1), "float32", "prompt_decoder.object_score_logits."),
            TensorSpec(
                "mask_is_binary",
                (OBJECTS,),
                "float32",
                "1.0 on frames with a user prompt (the mask is binarized), 0.0 on tracked frames (sigmoid).",
            ),
        ),
        outputs=(
            TensorSpec(
                "memory_features",
                (OBJECTS, t, d),
                "float32",
                f"{t} perceiver memory tokens: {t // 2} global latents then {t // 2} 2D window latents.",
            ),
            TensorSpec(
                "memory_positions",
                (OBJECTS, t, d),
                "float32",
                "Positional encodings of the memory tokens (zeros for the global latents, 2D sine for the "
                "window latents); store them with the features.",
            ),
        ),
        max_objects=shapes.max_objects,
    )


class ConvolutionalFuserBlock(nn.Module):
    """transformers' memory fuser block (ConvNeXt: depthwise conv, LayerNorm2d, two pointwise linears, layer
    scale, residual) with the norm as `AveragingChannelNorm` and the linears as 1x1 convolutions: one layout,
    no permutes (XNNPACK's ExecuTorch delegate copied the map between layouts around every linear)."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.depthwise_conv = block.depthwise_conv
        self.layer_norm = AveragingChannelNorm(block.layer_norm)
        self.pointwise_conv1 = pointwise_conv(block.pointwise_conv1)
        self.activation = block.activation
        self.pointwise_conv2 = pointwise_conv(block.pointwise_conv2)
        self.scale = nn.Parameter(block.scale.detach().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.pointwise_conv1(self.layer_norm(self.depthwise_conv(x)))
        return x + self.scale * self.pointwise_conv2(self.activation(hidden))


def rewrite_memory_encoder(encoder: nn.Module, form: StageForm) -> None:
    """transformers' memory encoder (the stage's own copy), rewritten in place in the operators `form` asks for."""
    if form.depthwise_taps is not None:
        for block in encoder.memory_fuser.layers:
            height, width = block.depthwise_conv.kernel_size
            if height * width > form.depthwise_taps:
                block.depthwise_conv = BandedDepthwiseConv(block.depthwise_conv, form.depthwise_taps)
    if form.convolutional_memory_encoder:
        for layer in encoder.mask_downsampler.layers:
            layer.layer_norm = AveragingChannelNorm(layer.layer_norm)
        encoder.memory_fuser.layers = nn.ModuleList(ConvolutionalFuserBlock(b) for b in encoder.memory_fuser.layers)


class MemoryEncoderStage(nn.Module):
    """Mask upsampling, memory encoder and spatial perceiver, batched over objects.

    Shapes:
        vision_features: (1, 256, E, E); mask_logits: (N, 1, 4E, 4E); object_score_logits: (N, 1)
        mask_is_binary: (N,)
        -> memory_features (N, T, 64), memory_positions (N, T, 64)
    """

    def __init__(self, model: EdgeTamVideoModel, shapes: StageShapes, form: StageForm = StageForm()) -> None:
        super().__init__()
        config = model.config
        rewrite_memory_encoder(model.memory_encoder, form)
        self.memory_encoder = model.memory_encoder
        self.spatial_perceiver = model.spatial_perceiver
        self.occlusion_embedding = model.occlusion_spatial_embedding_parameter
        self.upsample = BilinearUpsample(shapes.low_res_mask_size, shapes.image_size)
        self.mask_scale = float(config.sigmoid_scale_for_mem_enc)
        self.mask_bias = float(config.sigmoid_bias_for_mem_enc)
        perceiver = model.spatial_perceiver
        self.grid = math.isqrt(perceiver.num_latents_2d)
        grid_shape = (1, perceiver.hidden_size, self.grid, self.grid)
        positions_2d = perceiver.positional_encoding(grid_shape, torch.device("cpu"), torch.float32)
        contiguous_buffer(self, "positions_2d", positions_2d.flatten(2).transpose(1, 2))

    def perceive(self, memory: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The 2D Spatial Perceiver, batched over objects (transformers' version handles batch 1 only).

        Global latents attend to the whole map; each 2D latent attends to its own window.
        """
        perceiver = self.spatial_perceiver
        num_objects, dim, height, width = memory.shape
        flat = memory.permute(0, 2, 3, 1).flatten(1, 2)
        flat_positions = positions.permute(0, 2, 3, 1).flatten(1, 2)
        latents = perceiver.latents_1d.unsqueeze(0).expand(num_objects, -1, -1)
        for layer in perceiver.layers:
            latents = layer(latents, flat, flat_positions)
        global_latents = perceiver.layer_norm(latents)

        grid, window = self.grid, height // self.grid
        # Window partition with tensors of rank <= 5 (Core ML's limit).
        windows = memory.reshape(num_objects * dim, grid, window, grid, window).permute(0, 1, 3, 2, 4)
        windows = windows.reshape(num_objects, dim, grid * grid, window * window).permute(0, 2, 3, 1)
        windows = windows.reshape(num_objects * grid * grid, window * window, dim)
        latents = perceiver.latents_2d.unsqueeze(0).expand(num_objects, -1, -1).reshape(-1, 1, dim)
        for layer in perceiver.layers:
            latents = layer(latents, windows, None)
        window_latents = perceiver.layer_norm(latents.reshape(num_objects, grid * grid, dim))
        features = torch.cat([global_latents, window_latents], dim=1)
        positions = torch.cat(
            [torch.zeros_like(global_latents), self.positions_2d.expand(num_objects, -1, -1)], dim=1
        )
        return features, positions

    def forward(
        self,
        vision_features: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        mask_is_binary: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        high_res = self.upsample(mask_logits)
        binary = mask_is_binary.reshape(-1, 1, 1, 1)
        mask = binary * positive(high_res) + (1.0 - binary) * torch.sigmoid(high_res)
        return self.encode(vision_features, mask, object_score_logits)

    def encode(
        self, vision_features: torch.Tensor, mask: torch.Tensor, object_score_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory tokens of (N, 1, S, S) mask probabilities in 0..1 at the model's input size."""
        mask = mask * self.mask_scale + self.mask_bias
        # Expanded to the objects before the encoder: ExecuTorch 1.5.1's OpenVINO delegate fails at run time when the
        # frame's features reach it at batch 1 and broadcast inside (tested on the tiny model: projected once and then
        # expanded fails too).
        features = vision_features.expand(mask.shape[0], -1, -1, -1)
        memory, positions = self.memory_encoder(features, mask)
        if self.occlusion_embedding is not None:
            hidden = (object_score_logits <= 0).to(memory.dtype)[..., None, None]
            memory = memory + hidden * self.occlusion_embedding[..., None, None]
        return self.perceive(memory, positions)


@torch.no_grad()
def upstream(model: EdgeTamVideoModel, shapes: StageShapes, inputs: dict[str, torch.Tensor]) -> dict:
    """transformers' `_encode_new_memory` on the upsampled mask, one object at a time."""
    features, positions = [], []
    vision = inputs["vision_features"]
    flat_vision = vision.flatten(2).permute(2, 0, 1)  # (HW, 1, C) as the video model stores it
    for i in range(inputs["mask_logits"].shape[0]):
        high_res = F.interpolate(
            inputs["mask_logits"][i : i + 1],
            size=(model.image_size, model.image_size),
            mode="bilinear",
            align_corners=False,
        )
        memory, position = model._encode_new_memory(
            current_vision_feats=flat_vision,
            pred_masks_high_res=high_res,
            object_score_logits=inputs["object_score_logits"][i : i + 1],
            is_mask_from_pts=bool(inputs["mask_is_binary"][i] > 0.5),
        )
        features.append(memory[0])
        positions.append(position[0])
    return {"memory_features": torch.stack(features), "memory_positions": torch.stack(positions)}
