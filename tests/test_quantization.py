"""Reduced precision: per-stage schemes in recipes, each backend's quantizer, the gates against the fp32
reference (stage cosine, documentation examples, a tracking session) and the fall back to float."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import torch

from edgetam_export.backends import get_backend
from edgetam_export.quantization import StageQuantization, int8_convolutions, is_dequantized
from edgetam_export.backends.coreml import compress_weights
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.export import check_quantization, export_bundle, stage_to_fall_back
from edgetam_export.stages.program import export_program
from edgetam_export.verification.parity import OutputParity, ParityReport, compare_output
from edgetam_export.recipes import ParityThresholds, available_recipes, load_recipe, recipe_from_dict
from edgetam_export.runtime.mil_interpreter import OPS, MILInterpreter
from edgetam_export.stages.spec import OBJECTS, StageSpec, TensorSpec

from tests.test_coreml import _convert
from tests.test_export import heavy_operators_on_portable_kernels

QUANTIZED_RECIPES = [name for name in available_recipes() if load_recipe(name).quantization]
#: Tracking-gate frames in the tests (the recipes gate on all 200 frames of the clip; benchmarks run that).
TEST_GATE_FRAMES = 4


@pytest.fixture(scope="module")
def onnx_int8_progress() -> list[str]:
    """What the export of `onnx_int8` said while it ran."""
    return []


@pytest.fixture(scope="module")
def onnx_int8(tiny_reference, data_dir, tmp_path_factory, onnx_int8_progress):
    recipe = load_recipe("onnx-int8").with_shapes(max_objects=4)
    recipe = dataclasses.replace(recipe, tracking_gate=dataclasses.replace(recipe.tracking_gate, frames=TEST_GATE_FRAMES))
    return export_bundle(tiny_reference, recipe, tmp_path_factory.mktemp("int8") / "onnx-int8", data_dir=data_dir,
                         progress=onnx_int8_progress.append)


def test_shipped_reduced_precision_recipes_are_consistent():
    assert set(QUANTIZED_RECIPES) == {"executorch-xnnpack-int8", "onnx-int8", "coreml-int8", "coreml-palettized"}
    for name in QUANTIZED_RECIPES:
        recipe = load_recipe(name)
        check_quantization(recipe, get_backend(recipe.backend))
        assert recipe.parity.min_cosine == 0.99 and recipe.parity.min_example_iou == 0.95
        gate = recipe.tracking_gate
        assert (gate.frames, gate.objects, gate.min_mean_iou, gate.min_iou, gate.min_presence_agreement) == (
            200, 2, 0.95, 0.85, 0.99)
        assert recipe_from_dict(recipe.to_json(), "round trip") == recipe


def test_gate_frames_shorten_the_tracking_gate_and_travel_with_the_recipe():
    recipe = load_recipe("onnx-int8").with_gate_frames(30)
    assert recipe.tracking_gate.frames == 30 and recipe.tracking_gate.objects == 2
    assert recipe_from_dict(recipe.to_json(), "manifest").tracking_gate.frames == 30  # what the manifest records
    assert load_recipe("onnx-int8").with_gate_frames(None) == load_recipe("onnx-int8")


def test_the_reference_side_of_the_tracking_gate_is_played_once_per_weights(onnx_int8, tiny_reference, data_dir,
                                                                              monkeypatch):
    """The export played the gate (and again after any fallback); checking it once more reuses transformers' side."""
    from edgetam_export.verification import gates

    monkeypatch.setattr(gates, "run_reference", lambda *args: pytest.fail("transformers' session played again"))
    again = gates.check_tracking(tiny_reference, onnx_int8.path, data_dir, onnx_int8.manifest.recipe.tracking_gate)
    assert again["frames"] == TEST_GATE_FRAMES
    assert again["mean_iou"] == onnx_int8.manifest.parity["tracking"]["mean_iou"]


def test_wrong_quantization_is_refused_before_any_work(tiny_reference, tmp_path):
    with pytest.raises(EdgeTamExportError, match="scheme 'int4' for image_encoder is unknown"):
        recipe_from_dict({"name": "x", "description": "d", "backend": "onnx", "quantization": {"image_encoder": "int4"}}, "t")
    onnx = load_recipe("onnx-int8")
    with pytest.raises(EdgeTamExportError, match="unknown stage 'encoder'"):
        export_bundle(tiny_reference, dataclasses.replace(onnx, quantization={"encoder": "int8-static"}), tmp_path / "a")
    coreml = dataclasses.replace(load_recipe("coreml-int8"), quantization={"image_encoder": "int8-static"})
    with pytest.raises(EdgeTamExportError, match="coreml backend cannot apply 'int8-static' to image_encoder"):
        export_bundle(tiny_reference, coreml, tmp_path / "b")
    # XNNPACK's form of the memory encoder takes static int8 only, the scheme its gates were measured with.
    xnnpack = dataclasses.replace(load_recipe("executorch-xnnpack-int8"), quantization={"memory_encoder": "int8-dynamic"})
    with pytest.raises(EdgeTamExportError, match="cannot apply 'int8-dynamic' to memory_encoder; it supports int8-static$"):
        export_bundle(tiny_reference, xnnpack, tmp_path / "c")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_reduced_precision_gates_on_cosine_and_reports_psnr():
    thresholds = ParityThresholds(min_psnr_db=0.0, min_cosine=0.99, min_mask_iou=0.95)
    reference = np.linspace(-1, 1, 64, dtype=np.float32)
    noisy = reference + np.random.default_rng(0).normal(0, 0.05, 64).astype(np.float32)
    passed = compare_output("memory_attention", "c", "conditioned_features", reference, noisy, thresholds)
    assert passed.passed and 0.99 < passed.cosine < 1 and 10 < passed.psnr_db < 40
    failed = compare_output("memory_attention", "c", "conditioned_features", reference, reference[::-1].copy(), thresholds)
    assert failed.failures == [f"cosine {failed.cosine:.5f} < 0.99"]
    assert "cosine >= 0.99" in thresholds.describe() and "PSNR" not in thresholds.describe()


def _report(results: list[OutputParity], tracking_failures: list[str] | None = None) -> ParityReport:
    report = ParityReport("b", "r", "onnx", "rt", ParityThresholds(min_cosine=0.99), results=results)
    if tracking_failures is not None:
        report.tracking = {"failures": tracking_failures, "passed": not tracking_failures}
    return report


def test_the_stage_to_fall_back_is_the_quantized_one_that_loses_most(onnx_int8):
    stages = {name: dataclasses.replace(record, backend={"quantization": "int8-static"} if name != "mask_prompt_encoder" else {})
              for name, record in onnx_int8.manifest.stages.items()}
    ok = OutputParity("memory_encoder", "c", "memory_features", [1], [1], cosine=0.995)
    worse = OutputParity("image_encoder", "c", "vision_features", [1], [1], cosine=0.97, failures=["cosine 0.97000 < 0.99"])
    worst = OutputParity("prompt_decoder", "c", "mask_logits", [1], [1], cosine=0.95, failures=["cosine 0.95000 < 0.99"])
    unquantized = OutputParity("mask_prompt_encoder", "c", "x", [1], [1], cosine=0.5, failures=["cosine 0.5 < 0.99"])
    assert stage_to_fall_back(_report([ok, worse, worst, unquantized]), stages)[0] == "prompt_decoder"
    # Only a whole-use gate fails: the quantized stage with the lowest cosine is blamed, with the gate's reason.
    stage, reason = stage_to_fall_back(_report([ok, dataclasses.replace(worse, failures=[])], ["mean mask IoU 0.9 < 0.95"]), stages)
    assert stage == "image_encoder" and "mean mask IoU 0.9 < 0.95" in reason
    assert stage_to_fall_back(_report([ok]), stages) is None  # nothing fails
    floats = {name: dataclasses.replace(record, backend={}) for name, record in stages.items()}
    assert stage_to_fall_back(_report([worse]), floats) is None  # nothing quantized is left to blame


def test_onnx_int8_bundle_quantizes_and_passes_every_gate(onnx_int8, onnx_int8_progress, tiny_bundles):
    import onnx

    manifest = onnx_int8.manifest
    fp32 = tiny_bundles["onnx-fp32"].manifest
    for stage, scheme in manifest.recipe.quantization.items():
        facts = manifest.stages[stage].backend
        if "quantization_fallback" in facts:  # lowered again in fp32, and the manifest says why
            assert facts["quantization_fallback"].startswith(f"{scheme} failed the gate: ") and "quantization" not in facts
            continue
        assert facts["quantization"] == scheme
        ops = {node.op_type for node in onnx.load(str(onnx_int8.artifact(stage))).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops or {"QuantizeLinear", "DequantizeLinear"} <= ops
        assert manifest.stages[stage].size_bytes < 0.6 * fp32.stages[stage].size_bytes
    assert "quantization" not in manifest.stages["prompt_decoder"].backend
    # Quantizing memory attention adds no float constant of a position table's size: ONNX Runtime's optimizer would
    # fold the tables the stage rebuilds per call back into the file (the exporter itself folds them at tiny size
    # only, the same in fp32 and int8).
    table_size = onnx_int8.spec("memory_attention").inputs[0].shape[-1] ** 2 * manifest.shapes.memory_dim

    def float_tables(bundle) -> Counter:
        return Counter(tuple(t.dims) for t in onnx.load(str(bundle.artifact("memory_attention"))).graph.initializer
                       if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) >= table_size)

    assert not float_tables(onnx_int8) - float_tables(tiny_bundles["onnx-fp32"])
    parity = manifest.parity
    assert parity["passed"] and all(entry["min_cosine"] >= 0.99 for entry in parity["summary"].values())
    assert [e["name"] for e in parity["examples"]] == ["single click", "two clicks on one object", "box", "two objects",
                                                       "four boxes"]
    assert all(e["passed"] and e["mask_iou"] >= 0.95 for e in parity["examples"])
    tracking = parity["tracking"]
    assert tracking["frames"] == TEST_GATE_FRAMES and tracking["objects"] == 2 and tracking["passed"]
    assert tracking["mean_iou"] >= 0.95 and tracking["min_iou"] >= 0.85 and tracking["presence_agreement"] >= 0.99
    # The tracking gate reports as it goes: every frame result (one per object on frame 0, then one per frame) of
    # both sides on the first run; after a fallback only the bundle's side, transformers' being reused.
    per_side = 2 + TEST_GATE_FRAMES
    first = [line for line in onnx_int8_progress if line.startswith(f"gate: tracking result {2 * per_side}/{2 * per_side}, ")]
    again = [line for line in onnx_int8_progress if line.startswith(f"gate: tracking result {per_side}/{per_side}, ")]
    fallbacks = sum("quantization_fallback" in record.backend for record in manifest.stages.values())
    assert len(first) == 1 and len(again) == fallbacks
    assert (again or first)[-1].endswith(f"bundle, frame {TEST_GATE_FRAMES - 1}")


def test_gates_are_printed_beside_the_stage_table():
    report = _report([OutputParity("memory_attention", "c", "conditioned_features", [1], [1], max_abs=0.1, cosine=0.995,
                                   psnr_db=40.0)])
    report.examples = [{"name": "box", "mask_iou": 0.97, "worst_single_mask_iou": 0.9, "passed": True},
                       {"name": "single click", "mask_iou": 0.94, "worst_single_mask_iou": 0.9, "passed": False}]
    report.tracking = {"objects": 2, "frames": 200, "mean_iou": 0.97, "min_iou": 0.9, "presence_agreement": 1.0,
                       "failures": [], "passed": True}
    table = report.table()
    assert "documentation example 'box': mask IoU 0.9700 (worst single mask 0.9000)  yes" in table
    assert "documentation example 'single click': mask IoU 0.9400" in table and table.count("  NO") == 1
    assert "tracking 2 objects x 200 frames: mean IoU 0.9700, min IoU 0.9000, presence agreement 100.00%  yes" in table
    report.thresholds = ParityThresholds(min_cosine=0.99, min_example_iou=0.95)
    assert not report.passed and report.failures == ["documentation example 'single click': mask IoU 0.9400 < 0.95"]
    assert report.gates_json() == {"examples": report.examples, "tracking": report.tracking}


def test_int8_bundles_run_in_the_cli_runtime(onnx_int8, data_dir, tmp_path):
    """`segment`, `info` and `track` on an int8 bundle, as on a float one."""
    out = tmp_path / "seg"
    done = subprocess.run([sys.executable, "-m", "edgetam_export", "segment", str(data_dir / "images" / "truck.jpg"),
                           "--bundle", str(onnx_int8.path), "--point", "500,375", "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["masks"]
    info = subprocess.run([sys.executable, "-m", "edgetam_export", "info", str(onnx_int8.path)], capture_output=True, text=True)
    assert info.returncode == 0 and "min cosine" in info.stdout and "tracking gate: 2 objects" in info.stdout
    clip = tmp_path / "clip"
    clip.mkdir()
    for path in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:2]:
        (clip / path.name).write_bytes(path.read_bytes())
    tracked = subprocess.run([sys.executable, "-m", "edgetam_export", "track", str(clip), "--bundle", str(onnx_int8.path),
                              "--point", "0:1:210,350", "--out", str(tmp_path / "tracked")], capture_output=True, text=True)
    assert tracked.returncode == 0, tracked.stderr[-2000:]
    summary = json.loads((tmp_path / "tracked" / "summary.json").read_text())
    assert summary["frames_tracked"] == 2 and summary["objects"] == [1]
    assert len(list((tmp_path / "tracked" / "masks" / "1").iterdir())) == 2


class Weighted(torch.nn.Module):
    """A convolution and a linear layer big enough to be compressed (2048 weights or more)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 64, 3, padding=1)
        self.linear = torch.nn.Linear(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.relu(self.conv(x)).mean(dim=(2, 3)))


#: The toy model's contract, with an objects axis as the stages have (exported as a dynamic dimension).
TOY_SPEC = StageSpec("toy", "conv + linear", (TensorSpec("x", (OBJECTS, 32, 16, 16), "float32", "input"),),
                     (TensorSpec("y", (OBJECTS, 128), "float32", "output"),), max_objects=4)


@pytest.mark.parametrize("scheme", ["int8-static", "int8-dynamic"])
def test_executorch_int8_is_lowered_to_xnnpack_int8_kernels(scheme, tmp_path):
    """PT2E with XNNPACK's quantizer through the backend's `lower`: static (ranges from calibration inputs,
    convolution and linear) and dynamic (no calibration needed; the toy's convolution feeds a ReLU, which has no
    dynamic pattern, so only its linear layer); a program smaller than fp32,
    every convolution and matmul delegated, outputs within the cosine gate of the float module."""
    from edgetam_export.runtime.runners.executorch import ExecuTorchRunner

    torch.manual_seed(0)
    module = Weighted().eval()
    calibration = [{"x": torch.randn(2, 32, 16, 16)} for _ in range(4)] if scheme == "int8-static" else []
    recipe, backend = load_recipe("executorch-xnnpack-int8"), get_backend("executorch")
    program = export_program(module, TOY_SPEC)
    backend.lower(program, TOY_SPEC, recipe, tmp_path / "fp32.pte")
    facts = backend.lower(program, TOY_SPEC, recipe, tmp_path / "int8.pte", StageQuantization(scheme, calibration))
    assert facts["quantization"] == scheme
    assert heavy_operators_on_portable_kernels(facts) == []
    # Static: every weight in int8; dynamic: the linear layer's only (its convolution + ReLU has no dynamic pattern).
    limit = 0.5 if scheme == "int8-static" else 0.9
    assert (tmp_path / "int8.pte").stat().st_size < limit * (tmp_path / "fp32.pte").stat().st_size
    x = torch.randn(3, 32, 16, 16)
    got = ExecuTorchRunner(tmp_path / "int8.pte", TOY_SPEC).run({"x": x.numpy()})["y"]
    with torch.no_grad():
        expected = module(x).numpy()
    assert compare_output("toy", "random", "y", expected, got, recipe.parity).passed
    if scheme == "int8-static":
        with pytest.raises(EdgeTamExportError, match="static int8 needs calibration inputs"):
            backend.lower(program, TOY_SPEC, recipe, tmp_path / "x.pte", StageQuantization(scheme, []))


class Convolutional(torch.nn.Module):
    """No linear layer: nothing for int8-weights to quantize."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(32, 128, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


@pytest.mark.parametrize("backend_name", ["executorch", "onnx"])
def test_int8_weights_quantize_linear_weights_and_keep_activations_float(backend_name, tmp_path):
    """int8-weights (ExecuTorch, ONNX): each linear layer's weights stored as int8 codes per output channel and
    dequantized per call, activations fp32: the file shrinks by ~3 bytes per linear weight, no activation is
    quantized, ExecuTorch still runs every matmul in XNNPACK, and the outputs stay far inside the cosine gate
    on any batch size of the objects axis. A stage with no linear layer is refused in one line."""
    import onnx

    from edgetam_export.runtime.runners.executorch import ExecuTorchRunner
    from edgetam_export.runtime.runners.onnx import OnnxRunner

    torch.manual_seed(0)
    module = Weighted().eval()  # linear: 8,192 weights
    recipe = load_recipe({"executorch": "executorch-xnnpack-int8", "onnx": "onnx-int8"}[backend_name])
    backend, suffix = get_backend(backend_name), get_backend(backend_name).suffix
    program = export_program(module, TOY_SPEC)
    backend.lower(program, TOY_SPEC, recipe, tmp_path / f"fp32{suffix}")
    facts = backend.lower(program, TOY_SPEC, recipe, tmp_path / f"int8{suffix}", StageQuantization("int8-weights", []))
    assert facts["quantization"] == "int8-weights"
    saved = (tmp_path / f"fp32{suffix}").stat().st_size - (tmp_path / f"int8{suffix}").stat().st_size
    assert 3 * 8192 * 0.9 < saved < 3 * 8192 * 1.2
    if backend_name == "executorch":
        assert heavy_operators_on_portable_kernels(facts) == []
        runner = ExecuTorchRunner(tmp_path / "int8.pte", TOY_SPEC)
    else:
        ops = Counter(node.op_type for node in onnx.load(str(tmp_path / "int8.onnx")).graph.node)
        assert ops["DequantizeLinear"] == 1 and "QuantizeLinear" not in ops and "DynamicQuantizeLinear" not in ops
        runner = OnnxRunner(tmp_path / "int8.onnx", TOY_SPEC)
    for objects in (1, 3):
        x = torch.randn(objects, 32, 16, 16)
        with torch.no_grad():
            expected = module(x).numpy()
        assert compare_output("toy", "random", "y", expected, runner.run({"x": x.numpy()})["y"], recipe.parity).cosine > 0.9999
    spec = dataclasses.replace(TOY_SPEC, name="convolutional")
    with pytest.raises(EdgeTamExportError, match="convolutional: int8-weights found no .* with constant weights"):
        backend.lower(export_program(Convolutional().eval(), spec), spec, recipe, tmp_path / f"x{suffix}",
                      StageQuantization("int8-weights", []))
    if backend_name == "executorch":  # scoped: only linears under the named modules
        scoped = backend.lower(program, TOY_SPEC, recipe, tmp_path / "scoped.pte", StageQuantization("int8-weights", [], ("lin*",)))
        assert scoped["quantized_modules"] == ["lin*"]
        assert (tmp_path / "scoped.pte").stat().st_size == (tmp_path / "int8.pte").stat().st_size
        with pytest.raises(EdgeTamExportError, match="toy: int8-weights found no linear layer"):
            backend.lower(program, TOY_SPEC, recipe, tmp_path / "x.pte", StageQuantization("int8-weights", [], ("conv",)))
    assert not list(tmp_path.glob("x.*"))


def test_quantization_can_be_scoped_to_some_modules_of_a_stage(tiny_reference, tmp_path):
    """`[quantization_modules]` quantizes only the modules its patterns name (the rest of the stage keeps fp32
    weights); a pattern that matches nothing is refused when its stage is lowered, a scope on a float stage and a
    backend that quantizes whole stages only before any work; none of them leaves a file behind."""
    torch.manual_seed(0)
    module = Weighted().eval()  # conv: 18,432 weights, linear: 8,192
    calibration = [{"x": torch.randn(2, 32, 16, 16)} for _ in range(4)]
    recipe, backend = load_recipe("executorch-xnnpack-int8"), get_backend("executorch")
    program = export_program(module, TOY_SPEC)
    sizes = {}
    for name, modules in (("fp32", None), ("whole", ()), ("linear", ("lin*",))):
        quantization = None if modules is None else StageQuantization("int8-static", calibration, modules)
        facts = backend.lower(program, TOY_SPEC, recipe, tmp_path / f"{name}.pte", quantization)
        sizes[name] = (tmp_path / f"{name}.pte").stat().st_size
    assert facts["quantized_modules"] == ["lin*"]
    # The linear's weights went to int8 (3 bytes saved per weight), the convolution's stayed fp32.
    assert sizes["fp32"] - sizes["linear"] > 3 * 8192 * 0.9
    assert sizes["linear"] - sizes["whole"] > 3 * 18432 * 0.9
    with pytest.raises(EdgeTamExportError, match="pattern 'decoder.\\*' matches no module of the stage"):
        backend.lower(program, TOY_SPEC, recipe, tmp_path / "x.pte", StageQuantization("int8-static", calibration, ("decoder.*",)))
    with pytest.raises(EdgeTamExportError, match="scopes prompt_decoder, which \\[quantization\\] leaves in float"):
        recipe_from_dict({"name": "x", "description": "d", "backend": "executorch",
                          "quantization_modules": {"prompt_decoder": ["mask_decoder"]}}, "t")
    onnx = dataclasses.replace(load_recipe("onnx-int8"), quantization_modules={"prompt_decoder": ["mask_decoder"]})
    with pytest.raises(EdgeTamExportError, match="onnx backend quantizes whole stages only"):
        export_bundle(tiny_reference, onnx, tmp_path / "onnx")
    assert not (tmp_path / "x.pte").exists() and not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(("scheme", "target"), [("int8-weights", "iOS17"), ("int8-weights", "iOS18"),
                                                ("palettized-6bit", "iOS18")])
def test_compressed_core_ml_weights_are_interpreted(scheme, target, tmp_path):
    """The MIL interpreter expands constexpr weights itself (NumPy, not coremltools) and agrees with coremltools'
    own expansion; the compressed program stays within the cosine gate of the fp16 one."""
    import coremltools as ct

    torch.manual_seed(0)
    module, inputs = Weighted(), (torch.randn(1, 32, 16, 16),)
    plain = _convert(module, inputs, tmp_path / "plain.mlpackage", precision="fp16", target=target)
    recipe = dataclasses.replace(load_recipe("coreml-int8"), deployment_target=target)
    compressed = compress_weights(ct.models.MLModel(str(plain), skip_model_load=True), scheme, recipe)
    compressed.save(str(tmp_path / "compressed.mlpackage"))
    interpreter = MILInterpreter(tmp_path / "compressed.mlpackage")
    constexpr = [op for op in interpreter.function.operations if op.op_type.startswith("constexpr_")]
    assert constexpr, "no compressed weights in the program"
    for op in constexpr:
        ours = OPS[op.op_type](op, lambda key, default=None, op=op: op.inputs[key].val if key in op.inputs else default)
        np.testing.assert_allclose(np.asarray(ours, np.float32), np.asarray(op.materialized_val_inference(), np.float32),
                                   atol=1e-4, rtol=1e-3)
    feed = {"in0": inputs[0].numpy()}
    got = next(iter(interpreter.run(feed).values())).astype(np.float64).ravel()
    expected = next(iter(MILInterpreter(plain).run(feed).values())).astype(np.float64).ravel()
    assert got @ expected / np.linalg.norm(got) / np.linalg.norm(expected) > 0.99


def test_palettization_needs_ios18(tmp_path):
    import coremltools as ct

    plain = _convert(Weighted(), (torch.randn(1, 32, 8, 8),), tmp_path / "plain.mlpackage", precision="fp16")
    with pytest.raises(EdgeTamExportError, match="needs deployment_target iOS18"):
        compress_weights(ct.models.MLModel(str(plain), skip_model_load=True), "palettized-6bit", load_recipe("coreml-int8"))


def test_report_sets_reduced_precision_against_float_and_transformers():
    from edgetam_export.benchmarking.bench import EAGER
    from edgetam_export.benchmarking.report import reduced_precision

    def bundle(name: str, quantization: dict, sizes: dict, fallback: str | None = None) -> dict:
        artifacts = {stage: {"size_bytes": size} | ({"quantization": quantization[stage]} if stage in quantization else {})
                     for stage, size in sizes.items()}
        if fallback:
            artifacts[fallback]["quantization_fallback"] = "int8-static failed the gate: cosine 0.98 < 0.99"
        parity = {"summary": {stage: {"min_cosine": 0.995, "min_psnr_db": 31.0} for stage in sizes},
                  "tracking": {"objects": 2, "frames": 200, "mean_iou": 0.97, "min_iou": 0.9, "presence_agreement": 1.0,
                               "min_logit_psnr_db": 30.0}} if quantization else {}
        return {"runtime": name, "recipe": {"backend": "onnx", "delegate": None, "quantization": quantization},
                "artifacts": artifacts, "parity": parity}

    fp32 = bundle("onnx-fp32", {}, {"image_encoder": 20e6, "memory_attention": 6e6})
    int8 = bundle("onnx-int8", {"memory_attention": "int8-dynamic"}, {"image_encoder": 20e6, "memory_attention": 1.5e6},
                  fallback="image_encoder")
    int8["artifacts"]["memory_attention"]["quantized_modules"] = ["layers.*.mlp"]
    by_stage = {"image_encoder": {"onnx-fp32": {"p50_ms": 200.0}, "onnx-int8": {"p50_ms": 198.0}},
                "memory_attention": {"onnx-fp32": {"p50_ms": 400.0}, "onnx-int8": {"p50_ms": 300.0}}}
    fps = {EAGER: {1: {"fps": 1.0}, 4: {"fps": 0.4}}, "onnx-int8": {1: {"fps": 1.3}, 4: {"fps": 1.3}}}
    lines, targets = reduced_precision({"bundles": [fp32, int8]}, by_stage, fps)
    assert "| onnx-int8 | memory_attention | int8-dynamic of `layers.*.mlp` | 1.5 (0.25x) | 300.0 (0.75x) | 0.99500 | 31.0 |" in lines
    # Every bundle's rows sit under a table header of their own (Markdown renders no rows after a paragraph).
    second = dict(int8, runtime="onnx-int8-again")
    two, _ = reduced_precision({"bundles": [fp32, int8, second]}, by_stage, fps)
    under_header, rows = False, 0
    for line in two:
        under_header = line.startswith("| bundle |") or (under_header and line.startswith("|"))
        rows += line.startswith("| onnx-int8")
        assert under_header or not line.startswith("|"), line
    assert rows == 4 and sum(line.startswith("| bundle |") for line in two) == 2
    assert any("float (fallback: int8-static failed the gate: cosine 0.98 < 0.99)" in line for line in lines)
    assert any("tracking gate, 2 objects x 200 frames" in line for line in lines)
    assert targets == [
        "- onnx-int8: image encoder at 0.99x the latency of onnx-fp32 (target at most 0.5x): **missed**",
        "- onnx-int8: artifacts 83% of onnx-fp32's size (target at most 30%): **missed**",
        "- best reduced-precision bundle, 1 object(s): onnx-int8 at 1.30x transformers' video FPS (target at least 3x): **missed**",
        "- best reduced-precision bundle, 4 object(s): onnx-int8 at 3.25x transformers' video FPS (target at least 3x): **met**",
    ]


def test_int8_schemes_keep_the_rope_pair_rotation_exact_and_lower_to_xnnpack(tiny_reference, tiny_shapes, tiny_cases,
                                                                               tmp_path):
    """RoPE's +-1 pair swap is never rounded: int8-weights leaves its linear (a buffer weight) alone; PT2E rewrites
    it as slices (a float linear between quantized ones made XNNPACK propose partitions with dependency cycles, and
    the full-size executorch-xnnpack-int8 export failed), and the int8-dynamic stage lowers to XNNPACK."""
    from edgetam_export.quantization import int8_weight_only, quantize_pt2e
    from edgetam_export.stages.registry import STAGES

    stage = STAGES["memory_attention"]
    spec = stage.spec(tiny_shapes)
    program = export_program(stage.build(tiny_reference.video_model, tiny_shapes), spec)
    calibration = [case.inputs for case in tiny_cases if case.stage == "memory_attention"]
    inputs = tuple(calibration[0][name] for name in spec.input_names)
    expected = program.module()(*inputs)

    def rotations(graph, target) -> list:
        return [node for node in graph.nodes if node.target == target
                and "pair_rotation" in str(node.meta.get("nn_module_stack"))]

    weights = int8_weight_only(program, spec, StageQuantization("int8-weights", calibration))
    assert len(rotations(weights.graph, torch.ops.aten.linear.default)) == 8  # 2 layers x 2 attentions x (q, k)
    for node in rotations(weights.graph, torch.ops.aten.linear.default):
        assert not any("int8" in str(arg.target) for arg in node.all_input_nodes), node.args
    dynamic = quantize_pt2e(program, spec, StageQuantization("int8-dynamic", calibration))
    assert not rotations(dynamic.graph, torch.ops.aten.linear.default)
    assert len(rotations(dynamic.graph, torch.ops.aten.cat.default)) == 8
    for node in rotations(dynamic.graph, torch.ops.aten.cat.default):
        assert not any("quantize" in str(arg.target) for arg in node.all_input_nodes), node.args
    linears = [node for node in dynamic.graph.nodes if node.target == torch.ops.aten.linear.default]
    assert linears and all(any(is_dequantized(arg) for arg in node.all_input_nodes) for node in linears)
    cosine = torch.nn.functional.cosine_similarity(dynamic.module()(*inputs)[0].flatten(), expected[0].flatten(), dim=0)
    assert cosine > 0.99
    recipe = load_recipe("executorch-xnnpack-int8")
    facts = get_backend("executorch").lower(program, spec, recipe, tmp_path / "memory_attention.pte",
                                            StageQuantization("int8-dynamic", calibration))
    assert facts["quantization"] == "int8-dynamic" and heavy_operators_on_portable_kernels(facts) == []


def test_static_int8_memory_encoder_in_the_xnnpack_form_lowers_to_xnnpack(tiny_reference, tiny_shapes, tiny_cases,
                                                                          tmp_path):
    """XNNPACK's form puts float `AveragingChannelNorm`s (fixed operators) between the static int8 convolutions of the
    memory encoder; the program must still lower whole to XNNPACK (a float island between quantized operators once
    made its partitioner find dependency cycles: the RoPE rotation above) and stay close to the float stage."""
    from edgetam_export.quantization import quantize_pt2e
    from edgetam_export.stages.registry import STAGES

    recipe = load_recipe("executorch-xnnpack-int8")
    backend = get_backend("executorch")
    stage = STAGES["memory_encoder"]
    spec = stage.spec(tiny_shapes)
    program = export_program(stage.build(tiny_reference.video_model, tiny_shapes, backend.stage_form(recipe)), spec)
    calibration = [case.inputs for case in tiny_cases if case.stage == "memory_encoder"]
    quantization = StageQuantization("int8-static", calibration)
    quantized = quantize_pt2e(program, spec, quantization)
    norms = [node for node in quantized.graph.nodes if node.target == torch.ops.aten.conv2d.default
             and "AveragingChannelNorm" in str(node.meta.get("nn_module_stack"))]
    assert len(norms) == 12  # mean and variance of 6 norms, all in float
    assert not any(is_dequantized(arg) for node in norms for arg in node.all_input_nodes[1:])
    inputs = tuple(calibration[0][name] for name in spec.input_names)
    expected, got = program.module()(*inputs)[0], quantized.module()(*inputs)[0]
    assert torch.nn.functional.cosine_similarity(got.flatten(), expected.flatten(), dim=0) > 0.99
    facts = backend.lower(program, spec, recipe, tmp_path / "memory_encoder.pte", quantization)
    assert facts["quantization"] == "int8-static" and heavy_operators_on_portable_kernels(facts) == []

    # Scoped to the fuser, an ancestor of two norms: exactly its own convolutions take int8 weights; its norms, the
    # convolutions elsewhere and every concatenation (XNNPACK's annotator for them ignores scopes) stay float.
    fuser = StageQuantization("int8-static", calibration, ("memory_encoder.memory_fuser",))
    scoped = quantize_pt2e(program, spec, fuser)

    def owner(node: torch.fx.Node) -> str:
        return max((path for path, _ in node.meta["nn_module_stack"].values()), key=len)

    int8 = [owner(node) for node in int8_convolutions(scoped.graph)]
    assert sorted(set(int8)) == [f"memory_encoder.memory_fuser.layers.{i}.{conv}" for i in range(2)
                                 for conv in ("depthwise_conv", "pointwise_conv1", "pointwise_conv2")]
    assert len(int8) == 10  # 2 x (3 banded depthwise parts + 2 pointwise)
    assert not any(is_dequantized(arg) for node in scoped.graph.nodes if node.target == torch.ops.aten.cat.default
                   for arg in node.all_input_nodes)


def test_dynamic_int8_image_encoder_quantizes_its_dense_convolutions_in_one_xnnpack_graph(tiny_reference, tiny_shapes,
                                                                                          tiny_cases, tmp_path):
    """int8-dynamic on the image encoder: every non-depthwise convolution takes int8 weights and an input quantized
    per call, the depthwise ones (no dynamic XNNPACK kernel) stay float, and the stage lowers into as many XNNPACK
    graphs as in fp32 (split between two partitioners, each boundary converted layouts: 198 transposes instead of 22
    at full size)."""
    from edgetam_export.quantization import quantize_pt2e
    from edgetam_export.runtime.runners.executorch import ExecuTorchRunner
    from edgetam_export.stages.registry import STAGES

    recipe = load_recipe("executorch-xnnpack-int8")
    assert recipe.quantization["image_encoder"] == "int8-dynamic"
    backend = get_backend("executorch")
    stage = STAGES["image_encoder"]
    spec = stage.spec(tiny_shapes)
    program = export_program(stage.build(tiny_reference.video_model, tiny_shapes, backend.stage_form(recipe)), spec)
    quantization = StageQuantization("int8-dynamic", [])
    quantized = quantize_pt2e(program, spec, quantization)
    convs = [node for node in quantized.graph.nodes if node.target == torch.ops.aten.conv2d.default]

    depthwise = [node for node in convs if (node.args[6] if len(node.args) > 6 else 1) > 1]
    # XNNPACK's quantizer has no dynamic convolution + ReLU pattern: squeeze-excitation's reducing 1x1 convolution
    # (on one pixel) stays float.
    with_relu = [node for node in convs if any("relu" in str(user.target) for user in node.users)]
    dense = [node for node in convs if node not in depthwise and node not in with_relu]
    assert depthwise and dense and all("se.fc1" in str(node.meta["nn_module_stack"]) for node in with_relu)
    int8 = int8_convolutions(quantized.graph)
    assert all(node in int8 and is_dequantized(node.args[0]) for node in dense)
    assert not any(node in int8 for node in depthwise)
    facts = backend.lower(program, spec, recipe, tmp_path / "image_encoder.pte", quantization)
    float_facts = backend.lower(program, spec, recipe, tmp_path / "float.pte")
    assert facts["quantization"] == "int8-dynamic"
    assert facts["delegated_partitions"] == float_facts["delegated_partitions"]  # around the same portable upsampling
    assert heavy_operators_on_portable_kernels(facts) == []
    case = next(case for case in tiny_cases if case.stage == "image_encoder")
    expected = program.module()(*(case.inputs[name] for name in spec.input_names))
    got = ExecuTorchRunner(tmp_path / "image_encoder.pte", spec).run({k: v.numpy() for k, v in case.inputs.items()})
    for output, value in zip(spec.output_names, expected):
        assert compare_output("image_encoder", "random", output, value.detach().numpy(), got[output],
                              recipe.parity).passed, output
