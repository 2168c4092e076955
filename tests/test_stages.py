"""Each stage wrapper equals transformers' own computation, before any lowering."""

from __future__ import annotations

import copy

import pytest
import torch
from PIL import Image

from edgetam_export.backends import get_backend
from edgetam_export.recipes import load_recipe
from edgetam_export.verification.parity import psnr_db
from edgetam_export.reference import tie_like_released_checkpoint
from edgetam_export.stages.registry import STAGES
from edgetam_export.stages.common import (
    AveragingChannelNorm,
    AxialTable,
    BandedDepthwiseConv,
    BilinearUpsample,
    StageForm,
    assert_all_contiguous,
    positive,
)
from edgetam_export.stages.spec import EMPTY_SLOT_LABEL, NOT_A_POINT_LABEL

#: Every form a shipped backend writes the stages in (the attention forms: test_attention).
FORMS = {
    "transformers": StageForm(),
    "xnnpack": get_backend("executorch").stage_form(load_recipe("executorch-xnnpack-fp32")),
}


@pytest.fixture(scope="module", params=list(FORMS))
def wrappers(request, tiny_reference, tiny_shapes):
    form = FORMS[request.param]
    return {name: stage.build(tiny_reference.video_model, tiny_shapes, form) for name, stage in STAGES.items()}


def _run(wrapper, spec, inputs):
    with torch.no_grad():
        outputs = wrapper(*[inputs[name] for name in spec.input_names])
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    return dict(zip(spec.output_names, outputs))


def test_every_stage_has_a_case_and_contiguous_constants(wrappers, tiny_cases):
    assert {case.stage for case in tiny_cases} == set(STAGES)
    for wrapper in wrappers.values():
        assert_all_contiguous(wrapper)


def test_image_encoder_is_re_parameterized_and_leaves_the_reference_alone(tiny_reference, wrappers):
    """The exported backbone has no BatchNorm and one convolution per RepVGG block (the parity test below shows it
    computes the same function); the reference keeps its training-time branches."""

    def count(module: torch.nn.Module, kind: type) -> int:
        return sum(isinstance(m, kind) for m in module.modules())

    exported, reference = wrappers["image_encoder"].vision_encoder, tiny_reference.video_model.vision_encoder
    blocks = sum(type(m).__name__ == "RepVggDw" for m in reference.modules())
    assert blocks > 0 and count(reference, torch.nn.BatchNorm2d) > 0
    assert count(exported, torch.nn.BatchNorm2d) == 0
    assert count(exported, torch.nn.Conv2d) == count(reference, torch.nn.Conv2d) - blocks
    assert not any(type(m).__name__ == "RepVggDw" for m in exported.modules())


def test_position_tables_are_stored_as_per_axis_factors(tiny_reference, tiny_shapes, wrappers):
    """No stage carries an (E*E, C) position table: the RoPE, sine and Fourier tables are rebuilt per call from
    per-axis factors (the parity test below shows they equal transformers' tables)."""
    table_size = tiny_shapes.embed_size ** 2 * tiny_shapes.memory_dim  # a table of 64+ channels per grid cell
    for name, wrapper in wrappers.items():
        # The memory encoder's mask upsampling weights are an interpolation (mask size x image size), not a table.
        upsampling = {f"{module_name}.weight" for module_name, module in wrapper.named_modules()
                      if isinstance(module, BilinearUpsample)}
        for buffer_name, buffer in wrapper.named_buffers():
            assert buffer_name in upsampling or buffer.numel() < table_size, (name, buffer_name, tuple(buffer.shape))
    assert any(isinstance(module, BilinearUpsample) for module in wrappers["memory_encoder"].modules())
    attention = tiny_reference.video_model.memory_attention
    cos_q, _ = attention.rotary_emb(torch.zeros(1), attention.position_ids)
    width, height = tiny_reference.video_model.config.memory_attention_rope_feat_sizes
    assert torch.equal(AxialTable(cos_q[0], height, width)(), cos_q[0])
    with pytest.raises(ValueError, match="depends on both axes"):
        AxialTable(torch.randn(height * width, 8), height, width)


def test_wrappers_equal_upstream_on_realistic_inputs(tiny_reference, tiny_shapes, tiny_cases, wrappers):
    for case in tiny_cases:
        spec = STAGES[case.stage].spec(tiny_shapes)
        got = _run(wrappers[case.stage], spec, case.inputs)
        expected = STAGES[case.stage].upstream(tiny_reference.video_model, tiny_shapes, case.inputs)
        assert list(got) == list(expected) == spec.output_names
        for name in spec.output_names:
            assert got[name].shape == expected[name].shape == spec.outputs[spec.output_names.index(name)].concrete_shape(
                got[name].shape[0] if spec.outputs[spec.output_names.index(name)].has_objects_axis() else 1
            )
            # Non-degenerate reference values: otherwise agreement proves nothing.
            values = expected[name].float()
            assert values.numel() < 8 or values.std() > 1e-3, f"{case.stage}/{name} is degenerate"
            assert psnr_db(expected[name].numpy(), got[name].numpy()) > 100, f"{case.stage}/{name} [{case.label}]"


def test_decoder_equals_upstream_in_the_released_checkpoints_tied_form(tiny_reference, tiny_shapes, tiny_cases):
    """The test weights keep the prompt and image-wide Gaussian matrices apart (the test above); the released
    checkpoint stores one matrix for both, and that form must match too."""
    model = copy.deepcopy(tiny_reference.video_model)
    tie_like_released_checkpoint(model)
    stage = STAGES["prompt_decoder"]
    wrapper, spec = stage.build(model, tiny_shapes), stage.spec(tiny_shapes)
    cases = [case for case in tiny_cases if case.stage == "prompt_decoder"]
    assert cases
    for case in cases:
        got, expected = _run(wrapper, spec, case.inputs), stage.upstream(model, tiny_shapes, case.inputs)
        for name in spec.output_names:
            assert psnr_db(expected[name].numpy(), got[name].numpy()) > 100, f"{name} [{case.label}]"


def test_decoder_matches_edgetam_model_end_to_end(tiny_reference, wrappers, tiny_shapes, data_dir):
    """Wrapper chain == EdgeTamModel + Sam2Processor for a click, with empty slots padding the prompt."""
    image = Image.open(data_dir / "images" / "truck.jpg").convert("RGB")
    processor, model = tiny_reference.processor, tiny_reference.image_model
    inputs = processor(images=image, input_points=[[[[500, 375]]]], input_labels=[[[1]]], return_tensors="pt")
    with torch.no_grad():
        expected = model(**inputs)
    encoder_spec = STAGES["image_encoder"].spec(tiny_shapes)
    features = _run(wrappers["image_encoder"], encoder_spec, {"pixel_values": inputs["pixel_values"]})
    coords = torch.zeros(1, tiny_shapes.point_slots, 2)
    labels = torch.full((1, tiny_shapes.point_slots), EMPTY_SLOT_LABEL, dtype=torch.int32)
    coords[0, 0] = inputs["input_points"][0, 0, 0]
    labels[0, 0], labels[0, 1] = 1, NOT_A_POINT_LABEL
    decoder_inputs = {
        "image_embeddings": features["image_embeddings"],
        "high_res_features_0": features["high_res_features_0"],
        "high_res_features_1": features["high_res_features_1"],
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": torch.zeros(1, 1, tiny_shapes.low_res_mask_size, tiny_shapes.low_res_mask_size),
        "has_mask_input": torch.zeros(1),
    }
    got = _run(wrappers["prompt_decoder"], STAGES["prompt_decoder"].spec(tiny_shapes), decoder_inputs)
    torch.testing.assert_close(got["mask_logits"][:, 1:], expected.pred_masks[0], atol=2e-5, rtol=0)
    torch.testing.assert_close(got["iou_scores"][:, 1:], expected.iou_scores[0], atol=2e-6, rtol=0)


def test_empty_point_slots_change_nothing(wrappers, tiny_shapes, tiny_cases):
    """The same prompt in the first slots gives the same result whatever fills the empty slots."""
    spec = STAGES["prompt_decoder"].spec(tiny_shapes)
    case = next(c for c in tiny_cases if c.stage == "prompt_decoder")
    baseline = _run(wrappers["prompt_decoder"], spec, case.inputs)
    scrambled = dict(case.inputs)
    empty = case.inputs["point_labels"] == EMPTY_SLOT_LABEL
    assert empty.any()
    scrambled["point_coords"] = torch.where(empty[..., None], torch.rand_like(case.inputs["point_coords"]) * 999, case.inputs["point_coords"])
    other = _run(wrappers["prompt_decoder"], spec, scrambled)
    for name in spec.output_names:
        torch.testing.assert_close(other[name], baseline[name], atol=1e-6, rtol=0)


def test_objects_are_independent_in_a_batch(wrappers, tiny_shapes, tiny_cases):
    """Object i of a batch gives what it gives alone: batching is exact, not approximate."""
    for stage in ("prompt_decoder", "memory_encoder", "memory_attention"):
        spec = STAGES[stage].spec(tiny_shapes)
        per_object = next(t.name for t in spec.inputs if t.has_objects_axis())
        case = next(c for c in tiny_cases if c.stage == stage and c.inputs[per_object].shape[0] > 1)
        batch = _run(wrappers[stage], spec, case.inputs)
        for i in range(case.inputs[per_object].shape[0]):
            single = {
                t.name: case.inputs[t.name][i : i + 1] if t.has_objects_axis() else case.inputs[t.name]
                for t in spec.inputs
            }
            alone = _run(wrappers[stage], spec, single)
            for name in spec.output_names:
                torch.testing.assert_close(alone[name][0], batch[name][i], atol=2e-5, rtol=0)


def test_spec_check_inputs_reports_the_wrong_shape(tiny_shapes):
    from edgetam_export.errors import EdgeTamExportError

    spec = STAGES["prompt_decoder"].spec(tiny_shapes)
    inputs = {t.name: torch.zeros(t.concrete_shape(2)).numpy() for t in spec.inputs}
    assert spec.check_inputs(inputs) == 2
    inputs["point_coords"] = inputs["point_coords"][:, :3]
    with pytest.raises(EdgeTamExportError, match="point_coords.*expected"):
        spec.check_inputs(inputs)
    too_many = {t.name: torch.zeros(t.concrete_shape(tiny_shapes.max_objects + 1)).numpy() for t in spec.inputs}
    with pytest.raises(EdgeTamExportError, match="supports 1 to 4"):
        spec.check_inputs(too_many)


@pytest.mark.parametrize(("kernel", "taps"), [(7, 25), (7, 14), (9, 25), (5, 10)])
def test_banded_depthwise_convolution_equals_the_kernel_it_splits(kernel, taps):
    torch.manual_seed(kernel * taps)
    conv = torch.nn.Conv2d(8, 8, kernel, padding=kernel // 2, groups=8)
    banded = BandedDepthwiseConv(conv, taps)
    assert len(banded.weights) > 1 and all(w.shape[-2] * w.shape[-1] <= taps for w in banded.weights)
    x = torch.randn(3, 8, 19, 23)  # objects axis, odd and unequal sides
    with torch.no_grad():
        torch.testing.assert_close(banded(x), conv(x), atol=2e-6, rtol=0)


def test_banded_depthwise_convolution_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="stride 1"):
        BandedDepthwiseConv(torch.nn.Conv2d(8, 8, 7, stride=2, padding=3, groups=8), 25)
    with pytest.raises(ValueError, match="two rows"):
        BandedDepthwiseConv(torch.nn.Conv2d(8, 8, 7, padding=3, groups=8), 13)
    with pytest.raises(ValueError, match="depthwise"):
        BandedDepthwiseConv(torch.nn.Conv2d(8, 8, 7, padding=3), 25)
    with pytest.raises(ValueError, match="zero padding"):
        BandedDepthwiseConv(torch.nn.Conv2d(8, 8, 7, padding=3, groups=8, padding_mode="reflect"), 25)
    with pytest.raises(ValueError, match="channels-first"):
        AveragingChannelNorm(torch.nn.LayerNorm(8))


def test_banded_depthwise_convolution_of_a_kernel_within_its_taps_is_one_part():
    conv = torch.nn.Conv2d(4, 4, 3, padding=1, groups=4)
    banded = BandedDepthwiseConv(conv, 25)
    x = torch.randn(2, 4, 6, 5)
    assert len(banded.weights) == 1
    with torch.no_grad():
        torch.testing.assert_close(banded(x), conv(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [4, 256, 48])
def test_averaging_channel_norm_equals_transformers_channels_first_layer_norm(channels):
    from transformers.models.edgetam_video.modeling_edgetam_video import EdgeTamVideoLayerNorm

    torch.manual_seed(channels)
    norm = EdgeTamVideoLayerNorm(channels, eps=1e-6, data_format="channels_first")
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, channels, 9, 7) * 3 + 1
    with torch.no_grad():
        torch.testing.assert_close(AveragingChannelNorm(norm)(x), norm(x), atol=1e-5, rtol=1e-5)


def test_positive_is_the_exact_step_of_a_comparison():
    x = torch.tensor([-float("inf"), -1.0, -1e-45, -0.0, 0.0, 1e-45, 1e-38, 2.0, float("inf")])
    assert torch.equal(positive(x), (x > 0).to(x.dtype))


def test_the_xnnpack_form_has_no_layer_norm_2d_nor_wide_depthwise_kernel(tiny_reference, tiny_shapes):
    """What `BandedDepthwiseConv` and `AveragingChannelNorm` are for; the parity tests above run this form too."""
    wrapper = STAGES["memory_encoder"].build(tiny_reference.video_model, tiny_shapes, FORMS["xnnpack"])
    modules = list(wrapper.modules())
    assert not [m for m in modules if getattr(m, "data_format", None) == "channels_first"]
    assert not [m for m in modules if isinstance(m, torch.nn.Conv2d) and m.groups > 1]  # each is banded
    banded = [m for m in modules if isinstance(m, BandedDepthwiseConv)]
    assert len(banded) == len(tiny_reference.video_model.memory_encoder.memory_fuser.layers)
    assert all(w.shape[-2] * w.shape[-1] <= FORMS["xnnpack"].depthwise_taps for m in banded for w in m.weights)
    reference_modules = tiny_reference.video_model.memory_encoder.modules()
    assert sum(isinstance(m, AveragingChannelNorm) for m in modules) == sum(
        getattr(m, "data_format", None) == "channels_first" for m in reference_modules)
