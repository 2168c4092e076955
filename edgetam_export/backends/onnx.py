"""ONNX backend: one `.onnx` model per stage (dynamo exporter); `runtime.runners.onnx` runs them."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from edgetam_export.backends.base import Backend
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DEFAULT_OPSET = 18


class OnnxBackend(Backend):
    name = "onnx"
    suffix = ".onnx"

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path) -> dict:
        import onnx
        import torch

        opset = recipe.opset or DEFAULT_OPSET
        if opset < 17:
            raise EdgeTamExportError(f"recipe '{recipe.name}': opset {opset} is too old; use 17 or newer")
        onnx_program = torch.onnx.export(
            program,
            dynamo=True,
            input_names=spec.input_names,
            output_names=spec.output_names,
            opset_version=opset,
            optimize=True,
            verbose=False,
        )
        onnx_program.save(str(artifact), external_data=False)
        model = onnx.load(str(artifact))
        onnx.checker.check_model(model)
        return {"opset": opset, "nodes": len(model.graph.node)}

    def versions(self) -> dict[str, str]:
        return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "onnxscript": version("onnxscript")}
