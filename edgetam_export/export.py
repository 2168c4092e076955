"""Export and verify bundles: reference -> stages -> torch.export -> backend -> bundle folder -> parity.

`export_bundle` and `verify_bundle` are the Python API under the CLI commands of the same names.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

from torch.export import ExportedProgram

from edgetam_export.backends import Backend, get_backend
from edgetam_export.quantization import StageQuantization
from edgetam_export.runtime.mil_interpreter import FP16_MAX
from edgetam_export.runtime.runners import load_runners
from edgetam_export.runtime.runners.base import INTERPRETER, on_macos
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
from edgetam_export.verification.parity import ParityReport, compare_output
from edgetam_export.progress import Progress
from edgetam_export.recipes import Recipe
from edgetam_export.reference import Reference, load_reference
from edgetam_export.model_card import MODEL_CARD, model_card
from edgetam_export.safe_output import BUNDLE, check_target, staged_output, write_text_atomic
from edgetam_export.verification.sample_data import check_data_dir, default_data_dir
from edgetam_export.verification.samples import build_cases, calibration_pictures
from edgetam_export.stages.program import export_program
from edgetam_export.stages.registry import STAGES, StageSpec, stage_shapes, tracking_settings

ProgressSink = Callable[[str], None]

#: What a manifest's `parity.pictures` says the parity inputs were.
SAMPLE_PICTURES = "the sample pictures (images/truck.jpg, images/groceries.jpg, videos/bedroom)"
SYNTHETIC_PICTURES = "synthetic pictures (no sample data was found)"


def _quiet(message: str) -> None:
    """Default progress sink: say nothing."""


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
    nothing is written at `out` and the error lists the failing outputs. A quantized stage that fails
    its gate is lowered again in the recipe's float precision (the manifest records the fallback and
    why) until the bundle passes or no quantized stage is left to blame. `out` may be absent or
    empty; an existing bundle is replaced only with `overwrite`, and any other folder never.
    """
    backend = get_backend(recipe.backend)
    check_quantization(recipe, backend)
    form = backend.stage_form(recipe)
    check_target(Path(out), BUNDLE, overwrite)
    data_dir = check_data_dir(data_dir) or default_data_dir()
    if data_dir is None:
        progress(f"no sample data found: parity runs on {SYNTHETIC_PICTURES} (the manifest records it)")
    model = reference.video_model
    shapes = stage_shapes(model, recipe.shapes)
    calibration: dict[str, list] = {}
    if "int8-static" in recipe.quantization.values():  # activation ranges; weight-only schemes need none
        progress("quantization: running the reference on the calibration pictures")
        pictures = calibration_pictures(data_dir)
        for case in build_cases(reference, shapes, data_dir, pictures=pictures):
            calibration.setdefault(case.stage, []).append(case.inputs)
    with staged_output(out, BUNDLE, replace=overwrite) as staging:
        programs, stages = {}, {}
        for name, stage in STAGES.items():
            spec = stage.spec(shapes)
            progress(f"{name}: torch.export")
            started = time.perf_counter()
            programs[name] = export_program(stage.build(model, shapes, form), spec)
            scheme = recipe.quantization.get(name)
            modules = tuple(recipe.quantization_modules.get(name, ()))
            quantization = StageQuantization(scheme, calibration.get(name, []), modules) if scheme else None
            stages[name] = _lower_stage(backend, programs[name], spec, recipe, staging, quantization, started, progress)
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
        while not report.passed and (blamed := stage_to_fall_back(report, stages)):
            name, reason = blamed
            progress(f"{name}: {stages[name].backend['quantization']} fails the gate ({reason}); "
                     f"lowering it in {recipe.precision}")
            started = time.perf_counter()
            stage = _lower_stage(backend, programs[name], stages[name].spec, recipe, staging, None, started, progress)
            requested = recipe.quantization[name]
            stages[name] = dataclasses.replace(stage, backend=stage.backend | {
                "quantization_fallback": f"{requested} failed the gate: {reason}"
            })
            manifest = dataclasses.replace(manifest, stages=stages)
            write_manifest(staging, manifest)
            report = verify_bundle(staging, reference, data_dir=data_dir, progress=progress)
        if not report.passed:
            raise EdgeTamExportError(
                f"exported stages fail parity ({len(report.failures)} failures, first: {report.failures[0]}); "
                "no bundle written"
            )
        summary = report.to_json()
        manifest = dataclasses.replace(manifest, parity={
            "passed": report.passed,
            "runtime": report.runtime,
            "pictures": SYNTHETIC_PICTURES if data_dir is None else SAMPLE_PICTURES,
            "thresholds": summary["thresholds"],
            "summary": summary["summary"],
        } | report.gates_json())
        write_manifest(staging, manifest)
        write_text_atomic(staging / MODEL_CARD, model_card(manifest))
    return read_bundle(out)


def _lower_stage(
    backend: Backend,
    program: ExportedProgram,
    spec: StageSpec,
    recipe: Recipe,
    staging: Path,
    quantization: StageQuantization | None,
    started: float,
    progress: ProgressSink,
) -> StageRecord:
    """Lower one exported stage into the staging folder and describe it for the manifest."""
    exported = time.perf_counter()
    how = f" ({quantization.scheme})" if quantization else ""
    progress(f"{spec.name}: lowering to {recipe.backend}{how}")
    artifact = staging / f"{spec.name}{backend.suffix}"
    if artifact.is_dir():  # an earlier lowering of this stage in our staging folder (a fallback to float)
        shutil.rmtree(artifact)
    facts = backend.lower(program, spec, recipe, artifact, quantization)
    lowered = time.perf_counter()
    record = StageRecord(
        artifact=artifact.name,
        sha256=sha256_of(artifact),
        size_bytes=size_of(artifact),
        spec=spec,
        backend=facts,
        export_seconds={"torch_export": round(exported - started, 2), "lower": round(lowered - exported, 2)},
    )
    progress(f"{spec.name}: {record.size_bytes / 1e6:.1f} MB in {lowered - started:.1f} s")
    return record


def check_quantization(recipe: Recipe, backend: Backend) -> None:
    """Refuse, before any work, a stage name or a scheme the recipe's backend cannot apply."""
    if recipe.quantization_modules and not backend.module_scopes:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': the {recipe.backend} backend quantizes whole stages only; remove "
            "[quantization_modules] (its stages are then quantized whole) or use the executorch backend"
        )
    for stage, scheme in recipe.quantization.items():
        if stage not in STAGES:
            raise EdgeTamExportError(
                f"recipe '{recipe.name}': [quantization] names an unknown stage '{stage}'; stages are {', '.join(STAGES)}"
            )
        schemes = backend.stage_schemes(recipe, stage)
        if scheme not in schemes:
            raise EdgeTamExportError(
                f"recipe '{recipe.name}': the {recipe.backend} backend cannot apply '{scheme}' to {stage}; "
                f"it supports {', '.join(sorted(schemes)) or 'no quantization'}"
            )


def stage_to_fall_back(report: ParityReport, stages: dict[str, StageRecord]) -> tuple[str, str] | None:
    """The quantized stage to lower in float next, and why: the stage whose own outputs fail with the
    lowest cosine, else (only whole-use gates fail) the quantized stage with the lowest cosine."""
    quantized = {name for name, record in stages.items() if record.backend.get("quantization")}
    failing = [r for r in report.results if r.failures and r.stage in quantized]
    if failing:
        worst = min(failing, key=lambda r: r.cosine if r.cosine is not None else -1.0)
        return worst.stage, f"{worst.output} [{worst.case}]: {'; '.join(worst.failures)}"
    cosines: dict[str, float] = {}
    for r in report.results:
        if r.stage in quantized and r.cosine is not None:
            cosines[r.stage] = min(cosines.get(r.stage, 1.0), r.cosine)
    if not cosines or not report.failures:
        return None
    stage = min(cosines, key=cosines.get)
    return stage, f"{report.failures[0]} (lowest stage cosine {cosines[stage]:.5f})"


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
    if stages is None:
        _check_gates(report, bundle, reference, data_dir, progress)
    return report


def _check_gates(report: ParityReport, bundle: Bundle, reference: Reference, data_dir: Path | None,
                 progress: ProgressSink) -> None:
    """The recipe's whole-use gates: documentation examples and a tracking session (`gates.py`)."""
    recipe = bundle.manifest.recipe
    if recipe.parity.min_example_iou is None and recipe.tracking_gate is None:
        return
    if data_dir is None:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}' gates on the shared pictures and the bedroom clip; pass --data (the folder "
            "with images/ and videos/bedroom/)"
        )
    from edgetam_export.verification.gates import check_examples, check_tracking

    if recipe.parity.min_example_iou is not None:
        progress("gate: documentation examples")
        report.examples = [dataclasses.asdict(e) for e in
                           check_examples(reference, bundle.path, data_dir, recipe.parity.min_example_iou)]
    if recipe.tracking_gate is not None:
        gate = recipe.tracking_gate
        progress(f"gate: tracking {gate.objects} objects through {gate.frames} frames")
        report.tracking = check_tracking(reference, bundle.path, data_dir, gate, progress)


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
