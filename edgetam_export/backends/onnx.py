"""ONNX backend: one `.onnx` model per stage (dynamo exporter); `runtime.runners.onnx` runs them."""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from edgetam_export.backends.base import Backend, StageQuantization
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DEFAULT_OPSET = 18


class OnnxBackend(Backend):
    name = "onnx"
    suffix = ".onnx"
    schemes = frozenset({"int8-static", "int8-dynamic"})

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path,
              quantization: StageQuantization | None = None) -> dict:
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
        facts = {"opset": opset}
        if quantization is not None:
            quantize_onnx(artifact, quantization)
            facts["quantization"] = quantization.scheme
        model = onnx.load(str(artifact))
        onnx.checker.check_model(model)
        return facts | {"nodes": len(model.graph.node)}

    def versions(self) -> dict[str, str]:
        return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "onnxscript": version("onnxscript")}


def quantize_onnx(artifact: Path, quantization: StageQuantization) -> None:
    """ONNX Runtime int8, in place: shape inference and graph cleanup (`quant_pre_process`), then
    int8-static: QDQ per-channel Conv with activation ranges calibrated on the calibration inputs;
    both schemes: dynamic per-channel int8 MatMul/Gemm with constant weights (activation x activation
    matmuls of attention stay fp32, as ONNX Runtime's dynamic quantizer leaves them)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{k: v.numpy() for k, v in inputs.items()} for inputs in quantization.calibration])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    with tempfile.TemporaryDirectory(dir=artifact.parent) as scratch:
        current = Path(scratch) / "prepared.onnx"
        # ONNX Runtime's optimizer folds constant subgraphs into initializers. Convolution stages need that (their
        # weights reach the static quantizer as initializers); in memory attention it would bake the position
        # tables the stage rebuilds per call back into the file (full size: 27.3 MB instead of 4.6 MB int8).
        quant_pre_process(str(artifact), str(current), skip_optimization=quantization.scheme == "int8-dynamic",
                          skip_symbolic_shape=True)
        if quantization.scheme == "int8-static":
            convs = Path(scratch) / "convs.onnx"
            quantize_static(str(current), str(convs), Feeds(), quant_format=QuantFormat.QDQ, per_channel=True,
                            op_types_to_quantize=["Conv"], activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
            current = convs
        quantize_dynamic(str(current), str(artifact), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8)
