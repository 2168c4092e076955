"""Core ML: conversion with metadata, the NumPy MIL interpreter (each op against PyTorch), parity on Linux."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

from edgetam_export.runtime.runners import load_runner
from edgetam_export.runtime.runners.base import on_macos
from edgetam_export.bundle import read_bundle
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.export import export_bundle, verify_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.runtime import mil_interpreter
from edgetam_export.runtime.mil_interpreter import OPS, MILInterpreter
from edgetam_export.stages.registry import STAGES


class Convolutions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)
        self.dilated = nn.Conv2d(8, 6, 3, padding=2, dilation=2)
        self.up = nn.ConvTranspose2d(6, 4, kernel_size=2, stride=2)
        self.register_buffer("scale", torch.linspace(-2.0, 3.0, 8).reshape(1, 8, 1, 1))
        self.register_buffer("offset", torch.linspace(0.5, -0.5, 8).reshape(1, 8, 1, 1))

    def forward(self, x):
        x = x * self.scale + self.offset  # coremltools folds a per-channel multiply-add into batch_norm
        y = torch.relu(self.dilated(self.grouped(x)))
        y = self.up(y)
        y = nn.functional.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=False)
        return nn.functional.interpolate(torch.sigmoid(y), scale_factor=2.0, mode="nearest") + y.mean(dim=(2, 3), keepdim=True)


class Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k = nn.Linear(16, 16), nn.Linear(16, 16)
        self.norm = nn.LayerNorm(16)

    def forward(self, x, labels):
        q, k = self.q(self.norm(x)), self.k(x)
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) / 4.0, dim=-1)
        out = nn.functional.gelu(torch.matmul(weights, x))
        mask = ((labels == 1).int() * (labels > -1).int()).unsqueeze(-1) > 0
        out = torch.where(mask, out, torch.sin(out) - torch.cos(out))
        return torch.cat([out, out[:, :2].expand(-1, 2, -1)], dim=1).reshape(out.shape[0], -1).repeat(1, 2)


class Shapes(nn.Module):
    def forward(self, x):
        stacked = torch.stack([x, x * 2.0], dim=1)
        picked = stacked[:, 1, 1:3]
        present = (x > 0.5).to(x.dtype).flatten(1).amax(dim=1, keepdim=True)[:, :, None]
        return picked.permute(0, 2, 1).unsqueeze(1).flatten(2) / 3.0 + present


CASES = [
    (Convolutions(), (torch.randn(2, 8, 12, 12),)),
    (Attention(), (torch.randn(2, 5, 16), torch.tensor([[1, 0, 1, -1, 1], [0, 1, 1, 1, -1]], dtype=torch.int32))),
    (Shapes(), (torch.randn(3, 4, 6),)),
]


def _convert(module: nn.Module, inputs, path, precision: str = "fp32", target: str = "iOS17"):
    import coremltools as ct

    program = torch.export.export(module.eval(), inputs).run_decompositions({})
    model = ct.convert(
        program,
        inputs=[ct.TensorType(name=f"in{i}", shape=t.shape, dtype=np.int32 if t.dtype == torch.int32 else np.float32)
                for i, t in enumerate(inputs)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
        minimum_deployment_target=getattr(ct.target, target),
        skip_model_load=True,
    )
    model.save(str(path))
    return path


def test_each_interpreted_operation_matches_pytorch(tmp_path):
    seen = set()
    for index, (module, inputs) in enumerate(CASES):
        torch.manual_seed(index)
        package = _convert(module, inputs, tmp_path / f"case{index}.mlpackage")
        interpreter = MILInterpreter(package)
        seen |= {op.op_type for op in interpreter.function.operations}
        with torch.no_grad():
            expected = module(*inputs).numpy()
        got = interpreter.run({f"in{i}": t.numpy() for i, t in enumerate(inputs)})
        np.testing.assert_allclose(next(iter(got.values())), expected, atol=2e-5, rtol=1e-5)
    # Every operation the stages' programs use is exercised here or by the stage parity below.
    assert {"conv", "conv_transpose", "upsample_bilinear", "upsample_nearest_neighbor", "linear", "matmul", "softmax",
            "layer_norm", "gelu", "select", "sin", "cos", "concat", "stack", "slice_by_index", "reduce_mean",
            "reduce_max", "batch_norm", "equal", "greater", "relu", "sigmoid", "transpose", "reshape"} <= seen


def test_fp16_programs_round_every_fp16_result(tmp_path):
    module, inputs = CASES[0]
    package = _convert(module, inputs, tmp_path / "fp16.mlpackage", precision="fp16")
    interpreter = MILInterpreter(package)
    got = next(iter(interpreter.run({"in0": inputs[0].numpy()}).values()))
    with torch.no_grad():
        expected = module(*inputs).numpy()
    error = np.abs(got.astype(np.float32) - expected).max()
    assert 1e-5 < error < 5e-2  # fp16 rounding is visible, and bounded
    assert 0 < interpreter.max_abs_fp16 < mil_interpreter.FP16_MAX


def test_unknown_operation_is_named(tmp_path, monkeypatch):
    module, inputs = CASES[0]
    package = _convert(module, inputs, tmp_path / "m.mlpackage")
    monkeypatch.delitem(OPS, "conv_transpose")
    with pytest.raises(EdgeTamExportError, match="does not know the operation.*conv_transpose"):
        MILInterpreter(package)


@pytest.mark.parametrize(
    ("recipe", "floor"), [("coreml-fp16", 35.0), ("coreml-fp32", 60.0), ("executorch-coreml-fp16", 35.0)]
)
def test_coreml_bundles_pass_their_gates(coreml_bundles, tiny_reference, data_dir, recipe, floor):
    report = verify_bundle(coreml_bundles[recipe].path, tiny_reference, data_dir=data_dir)
    assert report.passed, report.failures
    assert {r.stage for r in report.results} == set(STAGES)
    assert min(r.psnr_db for r in report.results) >= floor
    assert min(r.mask_iou for r in report.results if r.mask_iou is not None) >= (0.98 if recipe == "coreml-fp16" else 0.99)
    assert all(r.max_abs_activation < mil_interpreter.FP16_MAX for r in report.results)
    if not on_macos():
        assert "NOT the Core ML runtime" in report.runtime


def test_executorch_programs_are_delegated_whole_to_core_ml(coreml_bundles, tmp_path):
    from edgetam_export.runtime.runners.executorch import extract_coreml_delegate

    bundle = coreml_bundles["executorch-coreml-fp16"]
    for stage, record in bundle.manifest.stages.items():
        assert record.artifact.endswith(".pte")
        assert record.backend | {"delegated_partitions": 1, "portable_ops": 0} == record.backend
        assert record.backend["precision"] == "fp16" and record.backend["deployment_target"] == "iOS17"
        package, (inputs, outputs) = extract_coreml_delegate(bundle.artifact(stage), tmp_path / stage)
        assert MILInterpreter(package).function.operations  # a real ML Program, read from inside the .pte
        assert len(outputs) == len(bundle.spec(stage).outputs)
    truncated = tmp_path / "truncated.pte"
    truncated.write_bytes(bundle.artifact("prompt_decoder").read_bytes()[:4096])
    with pytest.raises(EdgeTamExportError, match="cannot read ExecuTorch program .* re-export"):
        extract_coreml_delegate(truncated, tmp_path / "never")


def test_image_input_takes_camera_pixels(coreml_bundles, tiny_reference, data_dir):
    """The Core ML image encoder takes an RGB image with the normalization inside; the runtime feeds it."""
    import coremltools as ct
    from PIL import Image

    from edgetam_export.runtime.predictor import EdgeTamPredictor
    from edgetam_export.runtime.processing import image_encoder_inputs

    bundle = coreml_bundles["coreml-fp16"]
    spec = ct.utils.load_spec(str(bundle.artifact("image_encoder")))
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    assert bundle.spec("image_encoder").input_names == ["image"]
    picture = Image.open(data_dir / "images" / "truck.jpg").convert("RGB")
    pixels = image_encoder_inputs(picture, bundle.spec("image_encoder"))["image"]
    assert pixels.shape == (1, 3, 256, 256) and pixels.max() > 200 and np.all(pixels == np.round(pixels))
    # Segmenting through the image input (fp16, interpreted) gives the reference's masks.
    predictor = EdgeTamPredictor.from_bundle(bundle.path)
    got = predictor.predict(predictor.set_image(picture), points=[[[500, 375]]], labels=[[1]])
    inputs = tiny_reference.processor(
        images=picture, input_points=[[[[500, 375]]]], input_labels=[[[1]]], return_tensors="pt"
    )
    with torch.no_grad():
        outputs = tiny_reference.image_model(**inputs)
    expected = tiny_reference.processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0][0].numpy()
    ious = [np.logical_and(g, e).sum() / max(np.logical_or(g, e).sum(), 1) for g, e in zip(got.masks[0], expected)]
    assert min(ious) >= 0.98, ious
    assert 0.0 < got.masks.mean() < 1.0


def test_packages_carry_metadata_and_the_manifest_the_deployment(coreml_bundles):
    import coremltools as ct

    bundle = coreml_bundles["coreml-fp16"]
    for stage, record in bundle.manifest.stages.items():
        assert record.backend == {"precision": "fp16", "deployment_target": "iOS17", "compute_units": "ALL"}
        spec = ct.utils.load_spec(str(bundle.artifact(stage)))
        assert spec.description.metadata.author == "edgetam-export"
        assert "Apache-2.0" in spec.description.metadata.license
        assert stage in spec.description.metadata.shortDescription
        for feature in list(spec.description.input) + list(spec.description.output):
            assert feature.shortDescription, f"{stage}.{feature.name} has no description"


@pytest.mark.skipif(on_macos(), reason="on macOS Core ML can predict; this checks the Linux refusal")
def test_core_ml_prediction_on_linux_is_refused(coreml_bundles):
    bundle = coreml_bundles["coreml-fp16"]
    with pytest.raises(EdgeTamExportError, match="Core ML prediction needs macOS"):
        load_runner(bundle, "image_encoder", coreml_runtime="ALL")


@pytest.mark.skipif(on_macos(), reason="on macOS Core ML can predict; this checks the Linux refusal")
def test_cli_refuses_core_ml_prediction_on_linux_in_one_line(coreml_bundles, data_dir):
    from tests.test_cli import assert_one_line_error, cli

    result = cli("verify", str(coreml_bundles["coreml-fp16"].path), "--coreml-runtime", "ALL", "--data", str(data_dir))
    assert_one_line_error(result, "Core ML prediction needs macOS")


def test_corrupt_package_and_bad_deployment_target(coreml_bundles, tiny_reference, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(coreml_bundles["coreml-fp32"].path, copy)
    weights = next((copy / "memory_encoder.mlpackage").rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(EdgeTamExportError, match="memory_encoder.mlpackage does not match its manifest checksum"):
        read_bundle(copy)
    custom = tmp_path / "old.toml"
    custom.write_text('name = "old"\ndescription = "x"\nbackend = "coreml"\nprecision = "fp16"\ndeployment_target = "iOS12"\n')
    with pytest.raises(EdgeTamExportError, match="deployment target 'iOS12' is not supported"):
        export_bundle(tiny_reference, load_recipe(str(custom)), tmp_path / "never")
    assert not (tmp_path / "never").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
