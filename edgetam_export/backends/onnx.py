"""ONNX backend: one `.onnx` model per stage (dynamo exporter); `runtime.runners.onnx` runs them."""

from __future__ import annotations

import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from edgetam_export.backends.base import Backend
from edgetam_export.quantization import StageQuantization
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    import onnx
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe
    from edgetam_export.stages.common import AttentionKernel

DEFAULT_OPSET = 18


class OnnxBackend(Backend):
    name = "onnx"
    suffix = ".onnx"
    schemes = frozenset({"int8-static", "int8-dynamic", "int8-weights"})

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path,
              quantization: StageQuantization | None = None) -> dict:
        import onnx
        import torch

        from edgetam_export.backends.onnx_attention import TRANSLATIONS

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
            custom_translation_table=TRANSLATIONS,
        )
        model = onnx_program.model_proto
        strip_debug_metadata(model)
        if quantization is not None and quantization.scheme == "int8-weights":
            int8_weight_only(model, spec)
        onnx.save(model, str(artifact))
        facts = {"opset": opset}
        if quantization is not None:
            if quantization.scheme != "int8-weights":  # ONNX Runtime's quantizers work on files
                quantize_onnx(artifact, quantization)
            facts["quantization"] = quantization.scheme
        model = onnx.load(str(artifact))
        onnx.checker.check_model(model)
        return facts | {"nodes": len(model.graph.node)}

    def fused_attention(self, recipe: Recipe) -> AttentionKernel:
        from edgetam_export.backends.onnx_attention import multi_head_attention_kernel

        return multi_head_attention_kernel

    def versions(self) -> dict[str, str]:
        return {"onnx": version("onnx"), "onnxruntime": version("onnxruntime"), "onnxscript": version("onnxscript")}


#: Node metadata the exporter writes that a bundle keeps: the module each node came from. The rest (Python
#: stack traces with the exporting machine's paths, FX node text, class names) is 2.3 MB of a full-size fp32
#: bundle and makes a file's checksum depend on where it was exported.
KEPT_NODE_METADATA = frozenset({"pkg.torch.onnx.name_scopes"})


def strip_debug_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's debugging metadata from every node (`KEPT_NODE_METADATA` stays), in place."""
    from onnx import NodeProto

    def strip(nodes: list[NodeProto]) -> None:
        for node in nodes:
            kept = [entry for entry in node.metadata_props if entry.key in KEPT_NODE_METADATA]
            del node.metadata_props[:]
            node.metadata_props.extend(kept)
            node.doc_string = ""
            for attribute in node.attribute:
                for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                    strip(subgraph.node)

    strip(model.graph.node)
    for function in model.functions:
        strip(function.node)


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


def int8_weight_only(model: onnx.ModelProto, spec: StageSpec) -> None:
    """int8 weights, in place: each constant 2D weight of a MatMul / Gemm becomes int8 codes (symmetric, per
    output channel) and a `DequantizeLinear` in front of the float matmul. Activations stay fp32, so the
    error is the weights' rounding alone (ONNX Runtime's quantizers all quantize activations too)."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {init.name: init for init in graph.initializer}
    dequantized: dict[str, str] = {}
    added = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or node.input[1] not in weights:
            continue
        name = node.input[1]
        if name not in dequantized:
            weight = numpy_helper.to_array(weights[name])
            if weight.dtype != np.float32 or weight.ndim != 2:
                continue
            trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
            axis = 0 if trans_b else 1  # the output channels
            scale = np.abs(weight).max(axis=1 - axis) / 127
            scale = np.maximum(scale, np.finfo(np.float32).tiny).astype(np.float32)
            codes = np.clip(np.round(weight / np.expand_dims(scale, 1 - axis)), -127, 127).astype(np.int8)
            graph.initializer.extend([numpy_helper.from_array(codes, f"{name}_int8"),
                                      numpy_helper.from_array(scale, f"{name}_scale"),
                                      numpy_helper.from_array(np.zeros_like(scale, np.int8), f"{name}_zero")])
            added.append(helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale", f"{name}_zero"],
                                          [f"{name}_dequantized"], axis=axis, name=f"{name}_dequantize"))
            dequantized[name] = f"{name}_dequantized"
        node.input[1] = dequantized[name]
    if not dequantized:
        raise EdgeTamExportError(f"{spec.name}: int8-weights found no MatMul / Gemm with constant weights to quantize")
    still_read = {value for node in graph.node for value in node.input}
    kept = [init for init in graph.initializer if init.name not in dequantized or init.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [*added, *graph.node]  # the dequantizations read initializers only: the order stays topological
    del graph.node[:]
    graph.node.extend(nodes)
