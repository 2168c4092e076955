"""The small interface every backend implements: lower a stage to an artifact, and load one to run."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe


class StageRunner(Protocol):
    """A loaded stage artifact: named NumPy inputs in, named NumPy outputs out."""

    spec: StageSpec

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend(ABC):
    """Lowers `torch.export` programs of stages to one artifact format and runs those artifacts."""

    #: Registry name, as written in recipes and manifests.
    name: str
    #: File (or folder) suffix of one stage artifact.
    suffix: str

    @abstractmethod
    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path) -> dict:
        """Write the artifact of one stage; return backend facts for the manifest (delegation, opset...)."""

    @abstractmethod
    def load(self, artifact: Path, spec: StageSpec, manifest_stage: dict) -> StageRunner:
        """Load an artifact for inference on this machine (raise EdgeTamExportError if it cannot run here)."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools this backend used, for the manifest and benchmark records."""
        return {}


def ordered_inputs(spec: StageSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs in the contract's order, contiguous and of the contract's dtypes."""
    spec.check_inputs(inputs)
    return [np.ascontiguousarray(inputs[t.name], dtype=t.numpy_dtype) for t in spec.inputs]
