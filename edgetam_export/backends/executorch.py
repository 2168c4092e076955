"""ExecuTorch backend: `.pte` programs, delegated to XNNPACK, to Core ML, to OpenVINO, or on portable kernels
only; the XNNPACK and Core ML files run on Android / iOS, the OpenVINO ones on Intel CPUs, and all of them here
in `edgetam_export.runtime.runners.executorch`.

A Core ML-delegated program is lowered whole (one Core ML partition, nothing left to portable kernels),
so off macOS its single delegated ML Program can be taken out of the `.pte` and evaluated with the
MIL interpreter, as `.mlpackage` bundles are; on macOS the ExecuTorch runtime runs it through Core ML.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from collections import Counter
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgetam_export.backends.base import Backend
from edgetam_export.backends.coreml import coreml_target, fused_attention_for
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.quantization import StageQuantization, int8_convolutions, int8_weight_only, quantize_pt2e
from edgetam_export.runtime.runners.executorch import load_llm_custom_ops
from edgetam_export.stages.common import AttentionKernel, StageForm, fold_key_bias
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DELEGATES = ("xnnpack", "coreml", "openvino", None)
#: The most taps of a depthwise convolution XNNPACK runs with its depthwise kernels (5x5).
XNNPACK_DEPTHWISE_TAPS = 25
#: The stages XNNPACK's form writes in convolutions (`StageForm.convolutional_memory_encoder`).
CONVOLUTIONAL_STAGES = ("memory_encoder", "mask_prompt_encoder")


def custom_sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, key_bias: torch.Tensor | None
) -> torch.Tensor:
    """An `AttentionKernel` through ExecuTorch's flash-attention kernel, `llama::custom_sdpa`.

    The kernel takes (B, L, H, D) heads and one 2D mask for the whole batch, so a per-object key bias is
    folded into the heads. Built for a KV cache, without a mask it reads keys [0, start_pos + Lq):
    start_pos = Lk - Lq makes that every key; with fewer keys than queries a zero mask does.
    """
    head_dim = v.shape[-1]
    q, k, v, scale = fold_key_bias(q, k, v, scale, key_bias)
    queries, keys = q.shape[2], k.shape[2]
    mask = torch.zeros(queries, keys, dtype=q.dtype) if keys < queries else None
    out = torch.ops.llama.custom_sdpa(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), max(keys - queries, 0), mask, 0.0, False, scale
    )
    return out.transpose(1, 2)[..., :head_dim]


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    schemes = frozenset({"int8-static", "int8-dynamic", "int8-weights"})
    module_scopes = True

    def stage_schemes(self, recipe: Recipe, stage: str) -> frozenset[str]:
        """XNNPACK's form writes the memory encoders' pointwise layers as 1x1 convolutions and their norms as fixed
        averaging convolutions: weight-only int8 takes linear layers only and would leave them in float; these stages
        take static int8, the scheme their gates were measured with (cosine 0.9995, int8 outputs between layers)."""
        if recipe.delegate == "xnnpack" and stage in CONVOLUTIONAL_STAGES:
            return self.schemes & {"int8-static"}
        return self.schemes

    def stage_form(self, recipe: Recipe) -> StageForm:
        """XNNPACK: the memory encoder without LayerNorm2d (the delegate has no LayerNorm) and no depthwise kernel over
        25 taps (a 7x7 one runs as a grouped IGEMM). Full size, 1 object: 139.6 -> 76.8 ms (benchmarks/NOTES.md)."""
        form = super().stage_form(recipe)
        if recipe.delegate != "xnnpack":
            return form
        return dataclasses.replace(form, convolutional_memory_encoder=True, depthwise_taps=XNNPACK_DEPTHWISE_TAPS)

    def fused_attention(self, recipe: Recipe) -> AttentionKernel:
        """llama::custom_sdpa on CPU delegates (it runs as an ExecuTorch kernel beside XNNPACK's
        partitions); a Core ML-delegated program is lowered whole, so it takes Core ML's SDPA."""
        if recipe.delegate == "coreml":
            return fused_attention_for(recipe)
        load_llm_custom_ops()  # torch.ops.llama, traced by the kernel
        return custom_sdpa_attention

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path,
              quantization: StageQuantization | None = None) -> dict:
        from executorch.exir import to_edge_transform_and_lower

        if recipe.delegate not in DELEGATES:
            raise EdgeTamExportError(
                f"recipe '{recipe.name}': ExecuTorch delegate '{recipe.delegate}' is not supported here; "
                f"use one of {[d for d in DELEGATES if d]} or none"
            )
        partitioners, facts = [], {"delegate": recipe.delegate}
        if quantization is not None:
            if recipe.delegate != "xnnpack":
                raise EdgeTamExportError(
                    f"recipe '{recipe.name}': int8 ExecuTorch programs need the xnnpack delegate (set delegate = \"xnnpack\")"
                )
            if quantization.scheme == "int8-weights":
                program = int8_weight_only(program, spec, quantization)
            else:
                program = quantize_pt2e(program, spec, quantization)
            facts["quantization"] = quantization.scheme
            if quantization.modules:
                facts["quantized_modules"] = list(quantization.modules)
        if recipe.delegate == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
                XnnpackDynamicallyQuantizedPartitioner,
                XnnpackPartitioner,
            )

            if quantization is not None and quantization.scheme == "int8-dynamic" and not int8_convolutions(program.graph):
                # Memory attention: the dynamically quantized linears first (one partitioner finds dependency cycles).
                # Int8 convolutions stay with one partitioner: split, each boundary between them and the float depthwise
                # ones converts layouts (full-size image encoder 215 -> 102 ms, 198 -> 22 transposes).
                partitioners.append(XnnpackDynamicallyQuantizedPartitioner())
            partitioners.append(XnnpackPartitioner())
        elif recipe.delegate == "coreml":
            partitioners.append(_coreml_partitioner(recipe))
            facts |= {"precision": recipe.precision, "deployment_target": recipe.deployment_target or "iOS17",
                      "compute_units": recipe.compute_units or "ALL"}
        elif recipe.delegate == "openvino":
            partitioners.append(_openvino_partitioner(recipe))
            facts |= {"precision": recipe.precision, "openvino": version("openvino")}
        edge = to_edge_transform_and_lower(program, partitioner=partitioners)
        delegated, portable_kinds = count_delegation(edge.exported_program().graph_module)
        portable = sum(portable_kinds.values())
        # Core ML: so the MIL interpreter can check the program off macOS. OpenVINO: its delegate returns
        # objects-axis outputs at their upper bound (the runner cuts them), which no portable kernel may read.
        if recipe.delegate in ("coreml", "openvino") and (delegated, portable) != (1, 0):
            raise EdgeTamExportError(
                f"{spec.name}: {recipe.delegate} took {delegated} partitions and left {portable} operators to portable "
                f"kernels ({', '.join(portable_kinds)}); the recipe needs the whole stage in one partition"
            )
        artifact.write_bytes(edge.to_executorch().buffer)
        return facts | {"delegated_partitions": delegated, "portable_ops": portable, "portable_op_kinds": portable_kinds}

    def versions(self) -> dict[str, str]:
        try:
            return {"executorch": version("executorch"), "openvino": version("openvino")}
        except PackageNotFoundError:
            return {"executorch": version("executorch")}


def _coreml_partitioner(recipe: Recipe):
    """ExecuTorch's Core ML partitioner, asked to take the whole graph at the recipe's precision and target."""
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend as CoreMLDelegate
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    specs = CoreMLDelegate.generate_compile_specs(
        minimum_deployment_target=coreml_target(recipe),
        compute_precision={"fp16": ct.precision.FLOAT16, "fp32": ct.precision.FLOAT32}[recipe.precision],
        compute_unit=getattr(ct.ComputeUnit, recipe.compute_units or "ALL"),
    )
    return CoreMLPartitioner(compile_specs=specs, lower_full_graph=True)


#: Recipe precision -> what OpenVINO's CPU plugin must offer to compile it (it picks bf16 by itself on CPUs with
#: AVX512-BF16 or AMX, and the ExecuTorch partitioner passes it no precision hint).
OPENVINO_PRECISIONS = {"bf16": "BF16"}


def openvino_cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin can compute in on this machine (e.g. FP32, BF16, INT8)."""
    import openvino

    return list(openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _openvino_partitioner(recipe: Recipe):
    """ExecuTorch's OpenVINO partitioner, compiling for this machine's CPU.

    The program holds OpenVINO's compiled model, whose precision is the exporting CPU's default: bf16 where it has
    AVX512-BF16 or AMX, so a bf16 recipe is refused elsewhere rather than silently exported in fp32. The package
    `executorch.backends.openvino` imports its LLM quantizer first (nncf, pytorch_tokenizers: weight compression
    this project does not use), so the partitioner is imported under a bare package of the same path.
    """
    try:
        capabilities = openvino_cpu_capabilities()
    except ImportError:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}' needs OpenVINO; install the export extra (pip install -e '.[export]': openvino==2025.3.0)"
        ) from None
    needed = OPENVINO_PRECISIONS.get(recipe.precision)
    if needed is None:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}': OpenVINO recipes take precision {', '.join(OPENVINO_PRECISIONS)}, "
            f"not '{recipe.precision}'"
        )
    if needed not in capabilities:
        raise EdgeTamExportError(
            f"recipe '{recipe.name}' needs a CPU that computes in {recipe.precision} (AVX512-BF16 or AMX); this one "
            f"offers {', '.join(capabilities)}: export it on such a machine or use executorch-xnnpack-fp32"
        )
    name = "executorch.backends.openvino"
    if name not in sys.modules:
        backends = importlib.import_module("executorch.backends")
        package = types.ModuleType(name)
        package.__path__ = [str(Path(backends.__path__[0]) / "openvino")]
        sys.modules[name] = package
    from executorch.backends.openvino.partitioner import OpenvinoPartitioner
    from executorch.exir.backend.compile_spec_schema import CompileSpec

    class WholeStageOpenvinoPartitioner(OpenvinoPartitioner):
        """Takes the objects axis' size arithmetic (`sym_size`, int mul) into the partition too: left outside, it
        hands the partition SymInt inputs, which ExecuTorch 1.5.1's OpenVINO preprocess cannot compile."""

        def capture_nncf_patterns(self, graph_module: torch.fx.GraphModule) -> None:
            super().capture_nncf_patterns(graph_module)
            self._enabled_ops_by_name.update(
                node.name for node in graph_module.graph.nodes
                if node.op == "call_function" and isinstance(node.meta.get("val"), torch.SymInt)
            )

    return WholeStageOpenvinoPartitioner([CompileSpec("device", b"CPU")])


def count_delegation(graph_module: torch.fx.GraphModule) -> tuple[int, dict[str, int]]:
    """(delegated partitions, {operator: count} of those left to portable kernels) of a lowered edge program."""
    delegated, portable = 0, Counter()
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif not name.startswith("getitem") and "sym_size" not in name:
            portable[name] += 1
    return delegated, dict(sorted(portable.items()))
