"""Core ML runners: real `MLModel` prediction on macOS, the NumPy MIL interpreter elsewhere.

The interpreter evaluates the ML Program saved inside the package (fp16 where it is fp16) and is not
the Core ML runtime; reports say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.runners.base import INTERPRETER, on_macos, ordered_inputs
from edgetam_export.runtime.runners.interpreted import InterpretedRunner
from edgetam_export.stages.spec import IMAGE_INPUT, StageSpec

COMPUTE_UNITS = ("CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL")


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
