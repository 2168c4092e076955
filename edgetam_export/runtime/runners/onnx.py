"""ONNX Runtime runner (CPU execution provider): needs onnxruntime and NumPy only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.runners.base import ordered_inputs
from edgetam_export.stages.spec import ArtifactTensor, StageSpec

#: Intra-op threads of ONNX Runtime sessions (0 or unset: ONNX Runtime's default, one per core).
THREADS_ENV = "EDGETAM_ORT_THREADS"


class OnnxRunner:
    def __init__(self, artifact: Path, spec: StageSpec, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.spec = spec
        self.threads = threads
        try:
            self._session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EdgeTamExportError(f"cannot load ONNX model '{artifact}' ({short_reason(exc)}); re-export it") from None
        spec.check_artifact(artifact.name, [_declared(t) for t in self._session.get_inputs()],
                            [_declared(t) for t in self._session.get_outputs()])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = dict(zip(self.spec.input_names, ordered_inputs(self.spec, inputs)))
        outputs = self._session.run(self.spec.output_names, feed)
        return dict(zip(self.spec.output_names, outputs))


def _declared(value) -> ArtifactTensor:
    """An ONNX graph input or output as the graph declares it (symbolic sizes are None)."""
    dtype = value.type.removeprefix("tensor(").removesuffix(")")
    return ArtifactTensor(value.name, tuple(d if isinstance(d, int) else None for d in value.shape),
                          {"float": "float32"}.get(dtype, dtype))


def load_onnx(artifact: Path, spec: StageSpec, threads: int | None = None) -> OnnxRunner:
    return OnnxRunner(artifact, spec, threads or int(os.environ.get(THREADS_ENV, "0")) or None)
