"""Bundles: contents, atomic writes, parity on both backends, and every way a bundle can be bad."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgetam_export.bundle import FORMAT_VERSION, MANIFEST_NAME, read_bundle, sha256_of
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.export import export_bundle, verify_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.stages.registry import STAGES

RECIPES = ("executorch-xnnpack-fp32", "onnx-fp32")


@pytest.mark.parametrize("recipe", RECIPES)
def test_bundle_manifest_describes_everything(tiny_bundles, tiny_reference, recipe):
    bundle = tiny_bundles[recipe]
    manifest = bundle.manifest
    assert manifest.format_version == FORMAT_VERSION
    assert manifest.model.to_json() == tiny_reference.describe()
    assert manifest.recipe.name == recipe
    assert manifest.shapes.max_objects == 4
    assert list(manifest.stages) == list(STAGES)
    for name, record in manifest.stages.items():
        artifact = bundle.path / record.artifact
        assert record.sha256 == sha256_of(artifact)
        assert record.size_bytes == artifact.stat().st_size > 100_000
        assert record.spec.name == name
        assert record.export_seconds["lower"] > 0
    assert {"torch", "transformers", "executorch", "onnxruntime", "edgetam-export"} <= set(manifest.tools)
    assert manifest.parity["passed"] is True
    for stage in STAGES:
        assert manifest.parity["summary"][stage]["min_psnr_db"] >= 60
    assert manifest.parity["pictures"].startswith("the sample pictures")
    # The typed manifest writes back the JSON it was read from.
    assert manifest.to_json() == json.loads((bundle.path / "manifest.json").read_text())
    # The model card: weights (and the warning they are random), every stage with its artifact, size and parity.
    card = (bundle.path / "README.md").read_text()
    assert f"# EdgeTAM bundle: {recipe}" in card and "**Warning:** random weights (seed 0)" in card
    for name, record in manifest.stages.items():
        row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
        assert f"`{record.artifact}`" in row and f"{record.size_bytes / 1e6:.1f}" in row
        assert f"{float(manifest.parity['summary'][name]['min_psnr_db']):.1f}" in row
    leftovers = [p.name for p in bundle.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


#: Operators that carry the FLOPs; none of them may be left to ExecuTorch's portable (reference) kernels.
HEAVY_OPERATORS = ("convolution", "mm", "bmm", "addmm", "linear", "matmul", "baddbmm")


def heavy_operators_on_portable_kernels(facts: dict) -> list[str]:
    """The FLOP-carrying operators an XNNPACK-delegated stage left to portable kernels (its manifest facts)."""
    assert facts["delegate"] == "xnnpack" and facts["delegated_partitions"] >= 1
    kinds = facts["portable_op_kinds"]
    assert sum(kinds.values()) == facts["portable_ops"]
    return [k for k in kinds if k.split(".")[1 if k.startswith("aten.") else 0] in HEAVY_OPERATORS]


@pytest.mark.parametrize("stage", ["memory_encoder", "mask_prompt_encoder"])
def test_executorch_xnnpack_keeps_the_memory_encoders_maps_in_the_delegate(tiny_bundles, tiny_reference, tiny_shapes,
                                                                           stage, tmp_path):
    """The XNNPACK form (`Backend.stage_form`) hands the delegate the memory encoder's channels-first LayerNorms
    (the perceiver's token LayerNorms are left, on small tensors): against the transformers form lowered the same
    way, the bundle's stage leaves exactly those norms fewer to portable kernels."""
    from edgetam_export.backends import get_backend
    from edgetam_export.stages.program import export_program

    recipe = load_recipe("executorch-xnnpack-fp32")
    definition = STAGES[stage]
    spec = definition.spec(tiny_shapes)
    transformers_form = get_backend("executorch").lower(
        export_program(definition.build(tiny_reference.video_model, tiny_shapes), spec), spec, recipe,
        tmp_path / f"{stage}.pte")
    shipped = tiny_bundles["executorch-xnnpack-fp32"].manifest.stages[stage].backend
    channel_norms = sum(getattr(m, "data_format", None) == "channels_first"
                        for m in tiny_reference.video_model.memory_encoder.modules())
    layer_norm = "aten.native_layer_norm.default"
    assert channel_norms == 6
    assert shipped["portable_op_kinds"][layer_norm] == transformers_form["portable_op_kinds"][layer_norm] - channel_norms
    assert heavy_operators_on_portable_kernels(shipped) == []


@pytest.mark.parametrize("stage", list(STAGES))
def test_executorch_xnnpack_runs_every_matmul_and_convolution(tiny_bundles, stage):
    """XNNPACK takes every operator that carries FLOPs; what stays on portable kernels is glue (LayerNorm,
    views, copies: ExecuTorch 1.5.1's XNNPACK partitioner takes no LayerNorm), listed in the manifest."""
    heavy = heavy_operators_on_portable_kernels(tiny_bundles["executorch-xnnpack-fp32"].manifest.stages[stage].backend)
    assert heavy == [], f"{stage}: {heavy} run on portable kernels"


def test_onnx_artifacts_carry_no_trace_of_the_exporting_machine(tiny_bundles):
    """The exporter's debugging metadata (stack traces with this checkout's paths, FX node text) is dropped:
    only the module each node came from stays, so an artifact's checksum does not depend on where it was built."""
    import onnx

    from edgetam_export.backends.onnx import KEPT_NODE_METADATA

    checkout = str(Path(__file__).resolve().parents[1]).encode()
    bundle = tiny_bundles["onnx-fp32"]
    for stage in STAGES:
        artifact = bundle.artifact(stage)
        assert checkout not in artifact.read_bytes(), stage
        nodes = onnx.load(str(artifact)).graph.node
        keys = {entry.key for node in nodes for entry in node.metadata_props}
        assert keys == set(KEPT_NODE_METADATA) and not any(node.doc_string for node in nodes), (stage, keys)


@pytest.mark.parametrize("recipe", RECIPES)
def test_verify_passes_on_every_output(tiny_bundles, tiny_reference, data_dir, recipe):
    report = verify_bundle(tiny_bundles[recipe].path, tiny_reference, data_dir=data_dir)
    assert report.passed, report.failures
    assert {r.stage for r in report.results} == set(STAGES)
    for result in report.results:
        assert result.psnr_db >= 60, result
        assert result.cosine > 0.999999
    masks = [r for r in report.results if r.mask_iou is not None]
    assert masks and min(r.mask_iou for r in masks) >= 0.99
    # Both object counts were exercised through the dynamic objects axis.
    decoder_shapes = {tuple(r.shape) for r in report.results if r.output == "mask_logits"}
    assert {s[0] for s in decoder_shapes} == {1, 4}


def test_verify_fails_against_other_weights(tiny_bundles, data_dir):
    """Parity is not vacuous: the same bundle judged against different weights fails, on every stage."""
    other = random_reference(seed=1, size="tiny")
    report = verify_bundle(tiny_bundles["onnx-fp32"].path, other, data_dir=data_dir)
    assert not report.passed
    assert {f.split("/")[0] for f in report.failures} == set(STAGES)


def test_verify_reloads_the_reference_from_the_manifest(tiny_bundles, data_dir):
    report = verify_bundle(tiny_bundles["onnx-fp32"].path, data_dir=data_dir, stages=["prompt_decoder"])
    assert report.passed and {r.stage for r in report.results} == {"prompt_decoder"}


def _copy(bundle, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    return copy


def test_tampered_artifact_is_refused(tiny_bundles, tmp_path):
    copy = _copy(tiny_bundles["onnx-fp32"], tmp_path)
    with (copy / "prompt_decoder.onnx").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02\x03")
    with pytest.raises(EdgeTamExportError, match="prompt_decoder.onnx does not match its manifest checksum"):
        read_bundle(copy)


def test_newer_format_and_missing_pieces_are_refused(tiny_bundles, tmp_path):
    copy = _copy(tiny_bundles["onnx-fp32"], tmp_path)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest | {"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(EdgeTamExportError, match="newer than this edgetam-export reads.*upgrade"):
        read_bundle(copy)
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    (copy / "memory_encoder.onnx").unlink()
    with pytest.raises(EdgeTamExportError, match="lacks the memory_encoder artifact"):
        read_bundle(copy)
    (copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(EdgeTamExportError, match="corrupt or unreadable; re-export"):
        read_bundle(copy)
    with pytest.raises(EdgeTamExportError, match="does not exist"):
        read_bundle(tmp_path / "nowhere")


def test_failed_export_leaves_no_bundle_and_keeps_the_old_one(tiny_reference, tiny_bundles, tmp_path, monkeypatch):
    from edgetam_export.backends.onnx import OnnxBackend

    calls = []

    def broken_lower(self, program, spec, recipe, artifact, quantization=None):
        calls.append(spec.name)
        if spec.name == "memory_encoder":
            artifact.write_bytes(b"half written")
            raise RuntimeError("simulated crash while lowering")
        return original(self, program, spec, recipe, artifact, quantization)

    original = OnnxBackend.lower
    monkeypatch.setattr(OnnxBackend, "lower", broken_lower)
    recipe = load_recipe("onnx-fp32").with_shapes(max_objects=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_bundle(tiny_reference, recipe, tmp_path / "fresh")
    assert calls == ["image_encoder", "prompt_decoder", "memory_encoder"]
    assert list(tmp_path.iterdir()) == []

    existing = _copy(tiny_bundles["onnx-fp32"], tmp_path)
    before = sha256_of(existing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        export_bundle(tiny_reference, recipe, existing, overwrite=True)
    assert sha256_of(existing) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_unwritable_output_is_one_clear_error(tiny_reference, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(EdgeTamExportError, match="cannot write the bundle.*choose another --out"):
        export_bundle(tiny_reference, load_recipe("onnx-fp32"), blocker / "bundle")


def test_unknown_recipe_and_backend_name_the_supported_ones(tmp_path):
    with pytest.raises(EdgeTamExportError, match="unknown recipe 'nope': choose one of .*onnx-fp32"):
        load_recipe("nope")
    custom = tmp_path / "custom.toml"
    custom.write_text('name = "custom"\ndescription = "x"\nbackend = "tflite"\n')
    from edgetam_export.backends import get_backend

    with pytest.raises(EdgeTamExportError, match="unknown backend 'tflite': supported backends are executorch, onnx"):
        get_backend(load_recipe(str(custom)).backend)
    custom.write_text('name = "custom"\ndescription = "x"\nbackend = "onnx"\ncolour = "red"\n')
    with pytest.raises(EdgeTamExportError, match="unknown or missing field"):
        load_recipe(str(custom))


def test_a_degenerate_reference_fails_parity_even_when_matched():
    """Matching a (near-)constant reference proves nothing: it is a failure, not a pass."""
    from edgetam_export.verification.parity import compare_output
    from edgetam_export.recipes import ParityThresholds

    constant = np.full((4, 32), 0.25, np.float32)
    result = compare_output("memory_encoder", "flat", "memory_features", constant, constant.copy(), ParityThresholds())
    assert not result.passed and "reference is degenerate" in result.failures[0]
    scores = np.array([[3.0]], np.float32)  # one value per object: never judged by its spread
    assert compare_output("prompt_decoder", "one", "object_score_logits", scores, scores, ParityThresholds()).passed
