"""ONNX backend: one `.onnx` model per stage (dynamo exporter), run with ONNX Runtime."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgetam_export.backends.base import Backend, ordered_inputs
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DEFAULT_OPSET = 18


class OnnxRunner:
    def __init__(self, artifact: Path, spec: StageSpec, threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.spec = spec
        try:
            self._session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise EdgeTamExportError(f"cannot load ONNX model '{artifact}' ({str(exc)[:160]}); re-export it") from None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = dict(zip(self.spec.input_names, ordered_inputs(self.spec, inputs)))
        outputs = self._session.run(self.spec.output_names, feed)
        return dict(zip(self.spec.output_names, outputs))


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

    def load(self, artifact: Path, spec: StageSpec, manifest_stage: dict) -> OnnxRunner:
        threads = int(os.environ.get("EDGETAM_ORT_THREADS", "0")) or None
        return OnnxRunner(artifact, spec, threads)

    def versions(self) -> dict[str, str]:
        return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "onnxscript": version("onnxscript")}
