"""The small interface every backend implements: lower a stage to an artifact (runners run them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.quantization import StageQuantization
from edgetam_export.stages.common import AttentionKernel, StageForm, matmul_attention
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe


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

    def stage_schemes(self, recipe: Recipe, stage: str) -> frozenset[str]:
        """The quantization schemes this backend can apply to `stage` under `recipe` (its form may narrow them)."""
        return self.schemes

    def stage_form(self, recipe: Recipe) -> StageForm:
        """How the stages are written for this backend under `recipe` (traced, then lowered)."""
        return StageForm(attention=self.attention_kernel(recipe))

    def attention_kernel(self, recipe: Recipe) -> AttentionKernel:
        """The attention the stages are traced with under `recipe` (its `attention` form)."""
        return matmul_attention if recipe.attention == "matmul" else self.fused_attention(recipe)

    def fused_attention(self, recipe: Recipe) -> AttentionKernel:
        """This backend's one-op attention kernel for `recipe`, or a clear refusal."""
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': the {self.name} backend has no fused attention; set attention = \"matmul\""
        )
