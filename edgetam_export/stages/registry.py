"""The registry of the static-shape stages EdgeTAM is cut into, in pipeline order.

Each stage has one home (its module): the contract (`spec`), the export wrapper (an `nn.Module`
over transformers' submodules) and the `upstream` computation through transformers' own code,
which the wrapper is proven equal to before any lowering.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, EdgeTamVideoModel

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.recipes import RecipeShapes
from edgetam_export.stages import (
    image_encoder,
    mask_prompt_encoder,
    memory_attention,
    memory_encoder,
    prompt_decoder,
)
from edgetam_export.stages.common import AttentionKernel, StageForm, assert_all_contiguous
from edgetam_export.stages.spec import OBJECTS, STAGE_NAMES, StageShapes, StageSpec, TensorSpec, TrackingSettings


@dataclass(frozen=True)
class StageDefinition:
    """Where a stage's contract, wrapper and reference computation live."""

    name: str
    spec: Callable[[StageShapes], StageSpec]
    wrapper: Callable[[EdgeTamVideoModel, StageShapes, StageForm], nn.Module]
    upstream: Callable[[EdgeTamVideoModel, StageShapes, dict[str, torch.Tensor]], dict[str, torch.Tensor]]

    def build(self, model: EdgeTamVideoModel, shapes: StageShapes, form: StageForm = StageForm()) -> nn.Module:
        """The wrapper in eval mode, with every constant contiguous (checked), written in `form` (a backend's
        choice: `Backend.stage_form`).

        It wraps a copy of the model whose transformers attention (the perceiver's) is the same kernel,
        never transformers' SDPA path: that makes ExecuTorch add masking guards that run in slow portable
        kernels.
        """
        model = copy.deepcopy(model)
        model.config._attn_implementation = transformers_attention(form.attention)
        module = self.wrapper(model, shapes, form).eval().requires_grad_(False)
        assert_all_contiguous(module)
        return module


def transformers_attention(kernel: AttentionKernel) -> str:
    """The name under which transformers' attention modules call `kernel`. The matmul form too: transformers'
    "eager" attention multiplies 4D tensors, whose broadcasting ExecuTorch copies outside XNNPACK (`matmul_attention`
    runs one head as 3D bmm)."""
    name = f"edgetam-export:{kernel.__module__}.{kernel.__qualname__}"

    def forward(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                attention_mask: torch.Tensor | None, scaling: float, **kwargs) -> tuple[torch.Tensor, None]:
        return kernel(query, key, value, scaling, attention_mask).transpose(1, 2), None

    AttentionInterface.register(name, forward)
    return name


def _formless(wrapper: Callable[[EdgeTamVideoModel, StageShapes], nn.Module]):
    """A wrapper that one form fits: the image encoder (no attention; its convolutions every backend runs well)."""
    return lambda model, shapes, form: wrapper(model, shapes)


STAGES: dict[str, StageDefinition] = {
    module.NAME: StageDefinition(module.NAME, module.spec, wrapper, module.upstream)
    for module, wrapper in (
        (image_encoder, _formless(image_encoder.ImageEncoderStage)),
        (prompt_decoder, prompt_decoder.PromptDecoderStage),
        (memory_encoder, memory_encoder.MemoryEncoderStage),
        (memory_attention, memory_attention.MemoryAttentionStage),
        (mask_prompt_encoder, mask_prompt_encoder.MaskPromptEncoderStage),
    )
}

assert tuple(STAGES) == STAGE_NAMES, "spec.STAGE_NAMES must list the registry's stages in order"


def get_stage(name: str) -> StageDefinition:
    if name not in STAGES:
        raise EdgeTamExportError(f"unknown stage '{name}': choose from {', '.join(STAGES)}")
    return STAGES[name]


def stage_shapes(model: EdgeTamVideoModel, capacities: RecipeShapes) -> StageShapes:
    """The stage sizes of a model under a recipe's capacities (memory sizes default to the model's own)."""
    config = model.config
    point_slots, max_objects, image_input = capacities.point_slots, capacities.max_objects, capacities.image_input
    memory_slots, pointer_slots = capacities.memory_slots, capacities.pointer_slots
    perceiver = config.perceiver_resampler_num_latents + config.perceiver_resampler_num_latents_2d
    return StageShapes(
        image_size=int(config.image_size),
        hidden_size=int(config.vision_config.fpn_hidden_size),
        memory_dim=int(config.memory_encoder_output_channels),
        memory_tokens=int(perceiver),
        point_slots=point_slots,
        max_objects=max_objects,
        memory_slots=memory_slots if memory_slots is not None else int(config.num_maskmem),
        pointer_slots=pointer_slots if pointer_slots is not None else int(config.max_object_pointers_in_encoder),
        temporal_encodings=int(config.num_maskmem),
        image_input=image_input,
        pointer_temporal_encoding=bool(config.enable_temporal_pos_encoding_for_object_pointers),
    )


def tracking_settings(model: EdgeTamVideoModel) -> TrackingSettings:
    """The host-side tracking decisions of a model, as its config sets them (written into manifests)."""
    config = model.config
    return TrackingSettings(
        multimask_output_in_sam=bool(config.multimask_output_in_sam),
        multimask_output_for_tracking=bool(config.multimask_output_for_tracking),
        multimask_min_pt_num=int(config.multimask_min_pt_num),
        multimask_max_pt_num=int(config.multimask_max_pt_num),
        max_cond_frame_num=int(config.max_cond_frame_num),
        max_object_pointers=int(config.max_object_pointers_in_encoder),
    )


__all__ = [
    "OBJECTS", "STAGES", "StageDefinition", "StageShapes", "StageSpec", "TensorSpec", "TrackingSettings", "get_stage",
    "stage_shapes", "tracking_settings",
]
