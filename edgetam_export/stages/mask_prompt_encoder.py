"""Stage 5, `mask_prompt_encoder`: a user-drawn mask on a video frame, turned into what tracking stores.

transformers' video model does not run the decoder's mask for a frame prompted with a mask: it takes
the mask itself as the output (`_use_mask_as_output`). Its memory is encoded from the full-resolution
binary mask, which the `memory_encoder` stage (low-resolution logits in) cannot reproduce exactly, and
its object pointer comes from the decoder fed with the mask through a learned 4x4 convolution
(`mask_downsample`). This stage does both model-side parts; the host runs `prompt_decoder` on the frame's
raw `vision_features` with `decoder_mask_input` for the pointer, and downsamples the mask for display.
Only bundles used with mask prompts on video need it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from transformers import EdgeTamVideoModel

from edgetam_export.stages.common import StageForm, positive
from edgetam_export.stages.memory_encoder import MemoryEncoderStage
from edgetam_export.stages.spec import MASK_LOGIT_BIAS, MASK_LOGIT_SCALE, OBJECTS, StageShapes, StageSpec, TensorSpec

NAME = "mask_prompt_encoder"


def spec(shapes: StageShapes) -> StageSpec:
    c, e, s, m, d, t = (
        shapes.hidden_size,
        shapes.embed_size,
        shapes.image_size,
        shapes.low_res_mask_size,
        shapes.memory_dim,
        shapes.memory_tokens,
    )
    return StageSpec(
        name=NAME,
        description="Mask prompt on a video frame: memory tokens of the full-resolution mask, the decoder's "
        "mask input for the object pointer, and the object score the reference derives from the mask.",
        inputs=(
            TensorSpec("vision_features", (1, c, e, e), "float32", "image_encoder.vision_features of the frame."),
            TensorSpec(
                "masks",
                (OBJECTS, 1, s, s),
                "float32",
                f"Each object's mask at the model input size ({s}x{s}), 1.0 inside and 0.0 outside: the frame's "
                "mask resized with antialiased bilinear interpolation and thresholded at 0.5, as Sam2VideoProcessor does.",
            ),
        ),
        outputs=(
            TensorSpec("memory_features", (OBJECTS, t, d), "float32", "Memory tokens to store for the frame."),
            TensorSpec("memory_positions", (OBJECTS, t, d), "float32", "Their positional encodings."),
            TensorSpec(
                "decoder_mask_input",
                (OBJECTS, 1, m, m),
                "float32",
                "prompt_decoder.mask_input (with has_mask_input 1 and two not-a-point tokens, on the raw "
                "vision_features) that yields the object pointer; keep the best of the multimask pointers.",
            ),
            TensorSpec(
                "object_score_logits",
                (OBJECTS, 1),
                "float32",
                "10.0 if the mask has any pixel set, else -10.0 (the object is absent).",
            ),
            TensorSpec(
                "no_object_pointer",
                (OBJECTS, c),
                "float32",
                "The pointer to store instead of the decoder's when object_score_logits <= 0.",
            ),
        ),
        max_objects=shapes.max_objects,
    )


class MaskPromptEncoderStage(nn.Module):
    """Memory of a mask prompt plus the inputs the object pointer needs, batched over objects.

    Shapes:
        vision_features: (1, 256, E, E); masks: (N, 1, S, S)
        -> memory_features (N, T, 64), memory_positions (N, T, 64), decoder_mask_input (N, 1, 4E, 4E),
           object_score_logits (N, 1), no_object_pointer (N, 256)
    """

    def __init__(self, model: EdgeTamVideoModel, shapes: StageShapes, form: StageForm = StageForm()) -> None:
        super().__init__()
        self.memory = MemoryEncoderStage(model, shapes, form)
        self.mask_downsample = model.mask_downsample
        self.absent_pointer = model.no_object_pointer  # not "no_object_pointer": ONNX names outputs and weights alike

    def forward(
        self, vision_features: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = masks * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
        appearing = positive(masks.flatten(1).amax(dim=1, keepdim=True))
        object_score_logits = appearing * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS
        binary = positive(logits)
        memory_features, memory_positions = self.memory.encode(vision_features, binary, object_score_logits)
        decoder_mask_input = self.mask_downsample(masks)
        no_object_pointer = self.absent_pointer.expand(masks.shape[0], -1).contiguous()
        return memory_features, memory_positions, decoder_mask_input, object_score_logits, no_object_pointer


@torch.no_grad()
def upstream(model: EdgeTamVideoModel, shapes: StageShapes, inputs: dict[str, torch.Tensor]) -> dict:
    """transformers' own mask-as-output path, one object at a time: `_use_mask_as_output` (its logits,
    object score and the `mask_downsample` input it hands the decoder) then `_encode_new_memory` on its
    outputs, exactly as `_run_single_frame_inference` chains them for a mask prompt.

    The decoder call inside `_use_mask_as_output` only makes the object pointer, which the host gets
    from `prompt_decoder`; it is intercepted to record its mask input instead of running.
    """
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in spec(shapes).output_names}
    vision = inputs["vision_features"]
    flat_vision = vision.flatten(2).permute(2, 0, 1)
    handed_to_decoder: list[torch.Tensor] = []

    def decoder(input_masks: torch.Tensor, image_embeddings: list[torch.Tensor]) -> SimpleNamespace:
        handed_to_decoder.append(input_masks)
        return SimpleNamespace(object_pointer=torch.zeros(input_masks.shape[0], shapes.hidden_size))

    original, model._single_frame_forward = model._single_frame_forward, decoder
    try:
        for mask in inputs["masks"].split(1):
            out = model._use_mask_as_output(vision, [], mask)
            memory, position = model._encode_new_memory(
                current_vision_feats=flat_vision,
                pred_masks_high_res=out.high_res_masks,
                object_score_logits=out.object_score_logits,
                is_mask_from_pts=True,
            )
            values = (memory[0], position[0], handed_to_decoder[-1][0], out.object_score_logits[0],
                      model.no_object_pointer[0])
            for name, value in zip(outputs, values):
                outputs[name].append(value)
    finally:
        model._single_frame_forward = original
    return {name: torch.stack(values) for name, values in outputs.items()}
