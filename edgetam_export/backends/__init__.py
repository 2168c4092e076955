"""Backend registry: every supported artifact format behind the `Backend` interface."""

from __future__ import annotations

from edgetam_export.backends.base import Backend
from edgetam_export.backends.coreml import CoreMLBackend
from edgetam_export.backends.executorch import ExecuTorchBackend
from edgetam_export.backends.onnx import OnnxBackend
from edgetam_export.errors import EdgeTamExportError

BACKENDS: dict[str, type[Backend]] = {
    ExecuTorchBackend.name: ExecuTorchBackend,
    OnnxBackend.name: OnnxBackend,
    CoreMLBackend.name: CoreMLBackend,
}


def get_backend(name: str) -> Backend:
    if name not in BACKENDS:
        raise EdgeTamExportError(f"unknown backend '{name}': supported backends are {', '.join(BACKENDS)}")
    return BACKENDS[name]()


__all__ = ["BACKENDS", "Backend", "get_backend"]
