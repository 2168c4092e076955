"""Core ML runners: real `MLModel` prediction on macOS, the NumPy MIL interpreter elsewhere.

The interpreter evaluates the ML Program saved inside the package (fp16 where it is fp16) and is not
the Core ML runtime; reports say so.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.runners import ordered_inputs
from edgetam_export.stages.spec import IMAGE_INPUT, ArtifactTensor, StageSpec

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
            raise EdgeTamExportError(f"cannot load Core ML package '{artifact}' ({short_reason(exc)}); re-export it") from None

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
        function = self.interpreter.function
        declared_outputs = {var.name: var for var in function.outputs}
        spec.check_artifact(
            artifact.name,
            [_declared(own, name, function.inputs) for own, name in zip(self.input_names, spec.input_names)],
            [_declared(own, name, declared_outputs) for own, name in zip(self.output_names, spec.output_names)]
            + [ArtifactTensor(own, None, None) for own in declared_outputs if own not in self.output_names],
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: array for name, array in zip(self.input_names, ordered_inputs(self.spec, inputs)) if name}
        outputs = self.interpreter.run(feed)
        return {name: outputs[own].astype(np.float32) for name, own in zip(self.spec.output_names, self.output_names)}


def _declared(own: str | None, name: str, program_vars: dict) -> ArtifactTensor:
    """The program's variable for a contract tensor (its own name `own`; None: an input the program does not use),
    named as the contract when present; fp16 programs keep float32 contracts, so dtypes are not compared."""
    if own is None:
        return ArtifactTensor(None, None, None)
    if own not in program_vars:
        return ArtifactTensor(f"(none named {own})", None, None)
    shape = tuple(d if isinstance(d, int) else None for d in program_vars[own].shape)
    return ArtifactTensor(name, shape, None)


def load_coreml(artifact: Path, spec: StageSpec, facts: dict, coreml_runtime: str | None = None):
    """A runner for one `.mlpackage`: `coreml_runtime` compute units (macOS; default the manifest's backend
    `facts`), or the interpreter."""
    if not (artifact / "Manifest.json").is_file():
        raise EdgeTamExportError(f"'{artifact}' is not a Core ML package (no Manifest.json); re-export the bundle")
    units = coreml_runtime or (facts.get("compute_units", "ALL") if on_macos() else INTERPRETER)
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
