"""Seeded random weights for EdgeTAM: no pretrained weights can be downloaded in the test environment, and
transformers' own init gives outputs near zero, which would make every parity figure meaningless."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn
from transformers import EdgeTamVideoModel

from edgetam_export.bundle import RANDOM_SOURCE
from edgetam_export.reference.model import Reference, reference_from_model, build_video_config, build_video_processor

# Output scales of the random weights' heads (see init_random_weights).
MASK_LOGIT_GAIN = 30.0
OBJECT_SCORE_GAIN = 20.0
OBJECT_SCORE_BIAS = 3.0
#: Share of the frame that random weights' tracked masks cover (see calibrate_mask_area).
MASK_AREA = 0.3
OBJECT_SCORE_MARGIN = 6.0


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


def random_reference(seed: int = 0, size: str = "full", **overrides: object) -> Reference:
    """A reference with seeded random weights (no pretrained EdgeTAM weights can be downloaded here);
    `overrides` build a variant (see `build_video_config`)."""
    model = EdgeTamVideoModel(build_video_config(size, **overrides))
    init_random_weights(model, seed)
    return reference_from_model(model, RANDOM_SOURCE, size, seed, overrides)


# Original facebookresearch/EdgeTAM checkpoint layout -> transformers layout. Each rule is a regex
# substitution applied in order to every key; the layout is that of the released `edgetam.pt`.
