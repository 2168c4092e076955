"""The small interface every backend implements: lower a stage to an artifact (runners run them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    import torch
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe


@dataclass(frozen=True)
class StageQuantization:
    """Reduced precision asked of one stage: a scheme of `recipes.QUANTIZATION_SCHEMES` and, for static
    schemes, realistic inputs to calibrate activation ranges on (pictures the parity check does not use)."""

    scheme: str
    calibration: list[dict[str, torch.Tensor]]
    #: Module-name patterns (`fnmatch`, in the stage wrapper) to quantize; empty: the whole stage.
    modules: tuple[str, ...] = ()

    def selects(self, module_names: Iterable[str], stage: str) -> list[str]:
        """The module names this quantization covers, refusing a pattern that matches none of them (a typo
        would otherwise leave the stage silently in float)."""
        names = sorted(set(module_names))
        chosen = []
        for pattern in self.modules:
            matched = [n for n in names if fnmatchcase(n, pattern) or fnmatchcase(n, pattern + ".*")]
            if not matched:
                raise EdgeTamExportError(
                    f"{stage}: quantization_modules pattern '{pattern}' matches no module of the stage "
                    f"(modules look like '{names[len(names) // 2] if names else '-'}')"
                )
            chosen += matched
        return sorted(set(chosen))


class Backend(ABC):
    """Lowers `torch.export` programs of stages to one artifact format (`runtime.runners` runs them)."""

    #: Registry name, as written in recipes and manifests.
    name: str
    #: File (or folder) suffix of one stage artifact.
    suffix: str
    #: Quantization schemes this backend can apply to a stage.
    schemes: frozenset[str] = frozenset()
    #: Whether it can quantize only some modules of a stage (a recipe's `[quantization_modules]`).
    module_scopes: bool = False

    @abstractmethod
    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path,
              quantization: StageQuantization | None = None) -> dict:
        """Write the artifact of one stage, in float or quantized; return backend facts for the manifest
        (delegation, opset, the quantization applied...)."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools this backend used, for the manifest and benchmark records."""
        return {}
