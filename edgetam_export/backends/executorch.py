"""ExecuTorch backend: `.pte` programs, delegated to XNNPACK, to Core ML, or on portable kernels only; the
same files run on Android / iOS, and here in `edgetam_export.runtime.runners.executorch`.

A Core ML-delegated program is lowered whole (one Core ML partition, nothing left to portable kernels),
so off macOS its single delegated ML Program can be taken out of the `.pte` and evaluated with the
MIL interpreter, as `.mlpackage` bundles are; on macOS the ExecuTorch runtime runs it through Core ML.
"""

from __future__ import annotations

from collections import Counter

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from edgetam_export.backends.base import Backend, StageQuantization
from edgetam_export.backends.coreml import coreml_target
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.program import example_inputs, export_program
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DELEGATES = ("xnnpack", "coreml", None)


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"
    schemes = frozenset({"int8-static", "int8-dynamic", "int8-weights"})
    module_scopes = True

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

            if quantization is not None and quantization.scheme == "int8-dynamic":
                # The dynamically quantized linears first: one combined partitioner finds dependency cycles.
                partitioners.append(XnnpackDynamicallyQuantizedPartitioner())
            partitioners.append(XnnpackPartitioner())
        elif recipe.delegate == "coreml":
            partitioners.append(_coreml_partitioner(recipe))
            facts |= {"precision": recipe.precision, "deployment_target": recipe.deployment_target or "iOS17",
                      "compute_units": recipe.compute_units or "ALL"}
        edge = to_edge_transform_and_lower(program, partitioner=partitioners)
        delegated, portable_kinds = count_delegation(edge.exported_program().graph_module)
        portable = sum(portable_kinds.values())
        if recipe.delegate == "coreml" and (delegated, portable) != (1, 0):
            raise EdgeTamExportError(
                f"{spec.name}: Core ML took {delegated} partitions and left {portable} operators to portable "
                "kernels; the executorch-coreml recipes need the whole stage in one Core ML partition"
            )
        artifact.write_bytes(edge.to_executorch().buffer)
        return facts | {"delegated_partitions": delegated, "portable_ops": portable, "portable_op_kinds": portable_kinds}

    def versions(self) -> dict[str, str]:
        return {"executorch": version("executorch")}


def quantize_pt2e(program: ExportedProgram, spec: StageSpec, quantization: StageQuantization) -> ExportedProgram:
    """PT2E int8 with XNNPACK's quantizer: per-channel symmetric weights; activations static (ranges
    observed on the calibration inputs) or dynamic (linear layers only, ranges taken per call).

    The image encoder arrives re-parameterized (BatchNorm folded, RepVGG branches merged: one convolution
    per layer to quantize, see `stages.image_encoder`). Ops XNNPACK has no int8 kernel for (batched
    matmuls, softmax, layer norm, GELU) stay fp32 between quantized ones.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = quantization.scheme == "int8-dynamic"
    calls = [tuple(inputs[name] for name in spec.input_names) for inputs in quantization.calibration]
    if not calls:
        if not dynamic:
            raise EdgeTamExportError(f"{spec.name}: static int8 needs calibration inputs (sample pictures)")
        calls = [example_inputs(spec)]  # dynamic: one call so the weight observers see the weights
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    module = program.module()
    quantizer = XNNPACKQuantizer()
    if quantization.modules:
        for name in quantization.selects(called_module_names(module), spec.name):
            quantizer.set_module_name(name, config)
    else:
        quantizer.set_global(config)
    observed = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for args in calls:
            observed(*args)
    return export_program(convert_pt2e(observed), spec)


def int8_weight_only(program: ExportedProgram, spec: StageSpec, quantization: StageQuantization) -> ExportedProgram:
    """int8 weights for the stage's linear layers (symmetric, per output channel), dequantized per call.

    XNNPACK in ExecuTorch has no fp32-activation / int8-weight linear and runs a linear whose weight is
    computed on portable kernels (full-size decoder: minutes), so each linear becomes a batched matmul,
    which XNNPACK takes with a computed right-hand side: x @ (int8 weight * scale)^T + bias. Only the
    int8 -> fp32 cast runs outside the delegate. Activations stay fp32: the error is the weights' rounding.
    """
    aten = torch.ops.aten
    module = program.module()
    chosen = set(quantization.selects(called_module_names(module), spec.name)) if quantization.modules else None
    graph, replaced = module.graph, 0
    for node in list(graph.nodes):
        if node.target != aten.linear.default or node.args[1].op != "get_attr":
            continue
        if chosen is not None and not chosen & _module_path(node):
            continue
        x, weight_node, bias = (*node.args, None)[:3]
        weight = module.get_parameter(weight_node.target).detach()
        # Stored as the matmul's right-hand side, (1, in, out), scales (1, 1, out): no transpose per call.
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny) / 127
        codes = torch.round(weight / scale).clamp(-127, 127).to(torch.int8)
        module.register_buffer(f"int8_weight_{replaced}", codes.t().unsqueeze(0).contiguous())
        module.register_buffer(f"int8_scale_{replaced}", scale.t().unsqueeze(0).contiguous())
        rank = x.meta["val"].dim()
        with graph.inserting_before(node):
            codes = graph.get_attr(f"int8_weight_{replaced}")
            dequantized = graph.call_function(aten.mul.Tensor, (
                graph.call_function(aten._to_copy.default, (codes,), {"dtype": torch.float32}),
                graph.get_attr(f"int8_scale_{replaced}")))
            # All leading axes become rows of one (1, rows, in) batch: no copy of the weight per batch entry.
            left = graph.call_function(aten.reshape.default, (x, [1, -1, weight.shape[1]]))
            product = graph.call_function(aten.bmm.default, (left, dequantized))
            leading = [graph.call_function(aten.sym_size.int, (x, axis)) for axis in range(rank - 1)]
            product = graph.call_function(aten.reshape.default, (product, [*leading, weight.shape[0]]))
            if bias is not None:
                product = graph.call_function(aten.add.Tensor, (product, bias))
        node.replace_all_uses_with(product)
        graph.erase_node(node)
        replaced += 1
    if not replaced:
        raise EdgeTamExportError(f"{spec.name}: int8-weights found no linear layer with constant weights to quantize")
    graph.eliminate_dead_code()
    used = {node.target for node in graph.nodes if node.op == "get_attr"}
    for name, _ in list(module.named_parameters()):
        if name not in used:  # a replaced float weight: it would otherwise still be exported
            owner, _, attribute = name.rpartition(".")
            delattr(module.get_submodule(owner), attribute)
    module.recompile()
    return export_program(module, spec)


def _module_path(node: torch.fx.Node) -> set[str]:
    """The wrapper's modules a graph node was called from (its `nn_module_stack`)."""
    return {path.removeprefix("L['self'].") for path, _ in (node.meta.get("nn_module_stack") or {}).values() if path}


def called_module_names(graph_module: torch.fx.GraphModule) -> set[str]:
    """Qualified names of the wrapper's modules that the exported graph calls (its `nn_module_stack`), as
    XNNPACK's quantizer matches them in `set_module_name`."""
    return set().union(*(_module_path(node) for node in graph_module.graph.nodes))


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
