"""Export and verify bundles: reference -> stages -> torch.export -> backend -> bundle folder -> parity.

`export_bundle` and `verify_bundle` are the Python API under the CLI commands of the same names.
"""

from __future__ import annotations

import dataclasses
import platform
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import torch
from torch.export import Dim, ExportedProgram

from edgetam_export.backends import get_backend
from edgetam_export.runtime.mil_interpreter import FP16_MAX
from edgetam_export.runtime.runners import load_runners
from edgetam_export.runtime.runners.coreml import INTERPRETER, on_macos
from edgetam_export.bundle import (
    FORMAT_VERSION,
    Bundle,
    Manifest,
    ModelRecord,
    StageRecord,
    read_bundle,
    sha256_of,
    size_of,
    write_manifest,
)
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.parity import ParityReport, compare_output
from edgetam_export.progress import Progress
from edgetam_export.recipes import Recipe
from edgetam_export.reference import Reference, load_reference
from edgetam_export.safe_output import BUNDLE, check_target, staged_output
from edgetam_export.sample_data import check_data_dir, default_data_dir
from edgetam_export.samples import build_cases
from edgetam_export.stages.registry import OBJECTS, STAGES, StageSpec, tracking_settings

ProgressSink = Callable[[str], None]


def _quiet(message: str) -> None:
    """Default progress sink: say nothing."""


def example_inputs(spec: StageSpec, num_objects: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of a contract's shapes and dtypes, to trace a stage (never to judge parity)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for tensor in spec.inputs:
        shape = tensor.concrete_shape(num_objects)
        if tensor.dtype == "int32":
            tensors.append(torch.randint(0, 2, shape, generator=generator, dtype=torch.int32))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def export_program(module: torch.nn.Module, spec: StageSpec) -> ExportedProgram:
    """torch.export a stage wrapper; the objects axis becomes a dynamic dimension bounded by the recipe."""
    dynamic = None
    if spec.has_objects_axis() and spec.max_objects > 1:
        objects = Dim("objects", min=1, max=spec.max_objects)
        dynamic = tuple({t.shape.index(OBJECTS): objects} if t.has_objects_axis() else None for t in spec.inputs)
    example = example_inputs(spec, num_objects=min(2, spec.max_objects))
    with torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)


def tool_versions() -> dict[str, str]:
    packages = ("torch", "transformers", "executorch", "coremltools", "onnx", "onnxruntime", "numpy")
    found = {name: version(name) for name in packages}
    return found | {"edgetam-export": version("edgetam-export"), "python": platform.python_version()}


def export_bundle(
    reference: Reference,
    recipe: Recipe,
    out: Path,
    *,
    data_dir: Path | None = None,
    progress: ProgressSink = _quiet,
    overwrite: bool = False,
) -> Bundle:
    """Export every stage under a recipe into a verified bundle at `out`, atomically.

    The bundle is checked against the reference before it is moved into place: if parity fails,
    nothing is written at `out` and the error lists the failing outputs. `out` may be absent or
    empty; an existing bundle is replaced only with `overwrite`, and any other folder never.
    """
    backend = get_backend(recipe.backend)
    check_target(Path(out), BUNDLE, overwrite)
    data_dir = check_data_dir(data_dir)
    model = reference.video_model
    shapes = recipe.stage_shapes(model)
    with staged_output(out, BUNDLE, replace=overwrite) as staging:
        stages = {}
        for name, stage in STAGES.items():
            spec = stage.spec(shapes)
            progress(f"{name}: torch.export")
            started = time.perf_counter()
            program = export_program(stage.build(model, shapes), spec)
            exported = time.perf_counter()
            progress(f"{name}: lowering to {recipe.backend}")
            artifact = staging / f"{name}{backend.suffix}"
            facts = backend.lower(program, spec, recipe, artifact)
            lowered = time.perf_counter()
            stages[name] = StageRecord(
                artifact=artifact.name,
                sha256=sha256_of(artifact),
                size_bytes=size_of(artifact),
                spec=spec,
                backend=facts,
                export_seconds={"torch_export": round(exported - started, 2), "lower": round(lowered - exported, 2)},
            )
            progress(f"{name}: {stages[name].size_bytes / 1e6:.1f} MB in {lowered - started:.1f} s")
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            model=ModelRecord(**reference.describe()),
            recipe=recipe,
            shapes=shapes,
            tracking=tracking_settings(model),
            stages=stages,
            tools=tool_versions() | backend.versions(),
            machine={"platform": platform.platform(), "processor": platform.processor()},
        )
        write_manifest(staging, manifest)
        progress("checking parity against the reference")
        report = verify_bundle(staging, reference, data_dir=data_dir, progress=progress)
        if not report.passed:
            raise EdgeTamExportError(
                f"exported stages fail parity ({len(report.failures)} outputs, first: {report.failures[0]}); "
                "no bundle written"
            )
        summary = report.to_json()
        write_manifest(staging, dataclasses.replace(manifest, parity={
            "passed": report.passed,
            "runtime": report.runtime,
            "thresholds": summary["thresholds"],
            "summary": summary["summary"],
        }))
    return read_bundle(out)


def reference_for_bundle(bundle: Bundle) -> Reference:
    """Reload the weights a bundle was exported from, as recorded in its manifest."""
    model = bundle.manifest.model
    reference = load_reference(model.source, seed=model.seed or 0, size=model.size or "full",
                               config_overrides=model.config_overrides)
    if reference.weights_hash() != model.weights_sha256:
        raise EdgeTamExportError(
            f"the weights at '{model.source}' differ from those bundle '{bundle.path}' was exported from; "
            "pass the original weights with --model"
        )
    return reference


def verify_bundle(
    path: Path | str,
    reference: Reference | None = None,
    *,
    data_dir: Path | None = None,
    stages: list[str] | None = None,
    coreml_runtime: str | None = None,
    progress: ProgressSink = _quiet,
) -> ParityReport:
    """Run the bundle and the reference on the same realistic inputs and compare every output.

    Core ML bundles run on `coreml_runtime`: compute units of the real runtime (macOS) or
    'mil-interpreter' (the default on Linux).
    """
    bundle = read_bundle(path)
    data_dir = check_data_dir(data_dir)
    reference = reference or reference_for_bundle(bundle)
    recipe, shapes = bundle.manifest.recipe, bundle.manifest.shapes
    data_dir = data_dir or default_data_dir()
    report = ParityReport(
        bundle=str(bundle.path),
        recipe=recipe.name,
        backend=bundle.backend,
        runtime=runtime_description(bundle, coreml_runtime),
        thresholds=recipe.parity,
    )
    if data_dir is None:
        report.notes.append("no sample images found: synthetic images were used (set EDGETAM_EXPORT_DATA)")
    wanted = stages or bundle.stage_names
    runners = load_runners(bundle, wanted, coreml_runtime)
    progress("parity: running the reference on the sample images and frames")
    cases = [case for case in build_cases(reference, shapes, data_dir) if case.stage in runners]
    counter = Progress("parity: case", len(cases), progress)
    for case in cases:
        counter.advance(note=f"{case.stage} {case.label}")
        expected = STAGES[case.stage].upstream(reference.video_model, shapes, case.inputs)
        runner = runners[case.stage]
        got = runner.run({k: v.numpy() for k, v in case.inputs.items()})
        interpreter = getattr(runner, "interpreter", None)
        for output, value in expected.items():
            result = compare_output(case.stage, case.label, output, value.numpy(), got.get(output), report.thresholds)
            if interpreter is not None:
                # Largest fp16 value inside the whole program, not only at its outputs.
                result.max_abs_activation = interpreter.max_abs_fp16
                if not interpreter.max_abs_fp16 <= FP16_MAX:
                    result.failures.append(f"an fp16 activation reached {interpreter.max_abs_fp16} (fp16 max {FP16_MAX})")
            report.results.append(result)
    return report


def runtime_description(bundle: Bundle, coreml_runtime: str | None = None) -> str:
    """What actually ran the bundle in a parity report: it must never pass the interpreter off as Core ML."""
    interpreted = (f"MIL interpreter (NumPy, fp16 rounded after every fp16 operation) on {platform.machine()}: "
                   "the saved ML Program evaluated off-device, NOT the Core ML runtime")
    if bundle.backend == "coreml":
        if coreml_runtime in (None, INTERPRETER) and not on_macos() or coreml_runtime == INTERPRETER:
            return interpreted
        return f"Core ML ({coreml_runtime or 'recipe compute units'}) on macOS {platform.mac_ver()[0]}"
    delegate = bundle.manifest.recipe.delegate
    if bundle.backend == "executorch" and delegate == "coreml" and not on_macos():
        return f"Core ML delegate taken out of each .pte and run by the {interpreted}"
    descriptions = {
        "executorch": f"ExecuTorch {version('executorch')} Python runtime"
        + (" with its Core ML delegate" if delegate == "coreml" else "") + f" on {platform.machine()}",
        "onnx": f"ONNX Runtime {version('onnxruntime')} (CPUExecutionProvider) on {platform.machine()}",
    }
    return descriptions.get(bundle.backend, bundle.backend) + f", {sys.platform}"
