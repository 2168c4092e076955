"""What every runner shares: the runner interface, inputs in contract order, and where Core ML can run."""

from __future__ import annotations

import platform
from typing import Protocol

import numpy as np

from edgetam_export.stages.spec import StageSpec

#: `coreml_runtime` that evaluates Core ML programs with the NumPy MIL interpreter (any platform).
INTERPRETER = "mil-interpreter"


def on_macos() -> bool:
    return platform.system() == "Darwin"


class StageRunner(Protocol):
    """A loaded stage artifact: named NumPy inputs in, named NumPy outputs out."""

    spec: StageSpec

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def ordered_inputs(spec: StageSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs in the contract's order, contiguous and of the contract's dtypes."""
    spec.check_inputs(inputs)
    return [np.ascontiguousarray(inputs[t.name], dtype=t.numpy_dtype) for t in spec.inputs]
