"""Core ML backend: one ML Program `.mlpackage` per stage, converted from the same torch.export program.

Prediction needs macOS. On macOS the bundle runs through `MLModel` with the compute units asked
for; on Linux it runs through the NumPy MIL interpreter, which evaluates the saved program itself
(fp16 where the program is fp16) and says so in every report.
"""

from __future__ import annotations

import platform
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetam_export.backends.base import Backend, ordered_inputs
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import IMAGE_INPUT, OBJECTS, StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DEPLOYMENT_TARGETS = ("iOS17", "iOS18", "macOS14", "macOS15")
COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")
INTERPRETER = "mil-interpreter"


def on_macos() -> bool:
    return platform.system() == "Darwin"


class CoreMLRunner:
    """Real Core ML prediction (macOS only)."""

    def __init__(self, artifact: Path, spec: StageSpec, compute_units: str) -> None:
        import coremltools as ct

        self.spec = spec
        try:
            self._model = ct.models.MLModel(str(artifact), compute_units=getattr(ct.ComputeUnit, compute_units))
        except Exception as exc:  # Core ML reports unreadable packages with generic exceptions
            raise EdgeTamExportError(f"cannot load Core ML package '{artifact}' ({str(exc)[:120]}); re-export it") from None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed: dict = dict(zip(self.spec.input_names, ordered_inputs(self.spec, inputs)))
        if IMAGE_INPUT in feed:  # an image input takes a picture, as an app passes a camera frame
            from PIL import Image

            pixels = np.clip(np.rint(feed[IMAGE_INPUT][0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            feed[IMAGE_INPUT] = Image.fromarray(pixels, mode="RGB")
        outputs = self._model.predict(feed)
        return {name: np.asarray(outputs[name], dtype=np.float32) for name in self.spec.output_names}


class InterpretedRunner:
    """The NumPy MIL interpreter behind the runner interface (Linux, or on request)."""

    def __init__(
        self, artifact: Path, spec: StageSpec, names: tuple[list[str | None], list[str]] | None = None
    ) -> None:
        """`names`: the program's own names of the spec's inputs (None: unused) and outputs, in spec
        order, where they differ from the spec's (a delegate names its outputs after graph nodes)."""
        from edgetam_export.runtime.mil_interpreter import MILInterpreter

        self.spec = spec
        self.interpreter = MILInterpreter(artifact)
        self.input_names, self.output_names = names or (spec.input_names, spec.output_names)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: array for name, array in zip(self.input_names, ordered_inputs(self.spec, inputs)) if name}
        outputs = self.interpreter.run(feed)
        return {name: outputs[own].astype(np.float32) for name, own in zip(self.spec.output_names, self.output_names)}


def coreml_target(recipe: Recipe):
    """The recipe's minimum deployment target as a coremltools target, refusing unsupported ones."""
    import coremltools as ct

    target = recipe.deployment_target or "iOS17"
    if target not in DEPLOYMENT_TARGETS:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': deployment target '{target}' is not supported; use one of "
            f"{', '.join(DEPLOYMENT_TARGETS)}"
        )
    return getattr(ct.target, target)


class CoreMLBackend(Backend):
    name = "coreml"
    suffix = ".mlpackage"

    def __init__(self, compute_units: str | None = None) -> None:
        """`compute_units`: one of COMPUTE_UNITS for real Core ML (macOS), or 'mil-interpreter'."""
        self.compute_units = compute_units

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path) -> dict:
        import coremltools as ct

        target = coreml_target(recipe)
        precision = {"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[recipe.precision]
        inputs = []
        for tensor in spec.inputs:
            if tensor.name == IMAGE_INPUT:  # 0..255 RGB; the normalization is inside the stage
                inputs.append(ct.ImageType(name=tensor.name, shape=tensor.shape, color_layout=ct.colorlayout.RGB))
                continue
            shape = [
                ct.RangeDim(1, spec.max_objects, 1) if d == OBJECTS and spec.max_objects > 1 else (1 if d == OBJECTS else d)
                for d in tensor.shape
            ]
            inputs.append(ct.TensorType(name=tensor.name, shape=ct.Shape(shape), dtype=tensor.numpy_dtype.type))
        model = ct.convert(
            program.run_decompositions({}),
            inputs=inputs,
            outputs=[ct.TensorType(name=name) for name in spec.output_names],
            convert_to="mlprogram",
            compute_precision=precision,
            compute_units=getattr(ct.ComputeUnit, recipe.compute_units or "ALL"),
            minimum_deployment_target=target,
            skip_model_load=True,
        )
        model.author = "edgetam-export"
        model.license = "Apache-2.0 (EdgeTAM: facebookresearch/EdgeTAM; export: edgetam-export)"
        model.version = version("edgetam-export")
        model.short_description = f"EdgeTAM {spec.name}: {spec.description}"
        for tensor in spec.inputs:
            model.input_description[tensor.name] = f"{tensor.dtype} {list(tensor.shape)}: {tensor.description}"
        for tensor in spec.outputs:
            model.output_description[tensor.name] = f"{tensor.dtype} {list(tensor.shape)}: {tensor.description}"
        model.save(str(artifact))
        return {
            "precision": recipe.precision,
            "deployment_target": recipe.deployment_target or "iOS17",
            "compute_units": recipe.compute_units or "ALL",
        }

    def load(self, artifact: Path, spec: StageSpec, manifest_stage: dict):
        if not (artifact / "Manifest.json").is_file():
            raise EdgeTamExportError(f"'{artifact}' is not a Core ML package (no Manifest.json); re-export the bundle")
        units = self.compute_units or (manifest_stage["backend"]["compute_units"] if on_macos() else INTERPRETER)
        if units == INTERPRETER:
            return InterpretedRunner(artifact, spec)
        if not on_macos():
            raise EdgeTamExportError(
                "Core ML prediction needs macOS; on this machine verify Core ML bundles with the MIL interpreter "
                f"(--coreml-runtime {INTERPRETER})"
            )
        if units not in COMPUTE_UNITS:
            raise EdgeTamExportError(f"unknown compute units '{units}': choose one of {', '.join(COMPUTE_UNITS)}")
        return CoreMLRunner(artifact, spec, units)

    def versions(self) -> dict[str, str]:
        return {"coremltools": version("coremltools")}
