"""Reduced precision as a step of its own, between `torch.export` and lowering: a stage program in, a program with
int8 in it out (ExecuTorch's PT2E flow: XNNPACK's quantizer, static or dynamic activations, or int8 weights only).

The ExecuTorch backend lowers what comes out; ONNX Runtime and Core ML quantize their own artifacts after
conversion (`backends/onnx.py`, `backends/coreml.py`), as their tools work on those formats.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

import torch
from torch.export import ExportedProgram

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.common import FIXED_OPERATORS, PairRotation
from edgetam_export.stages.program import example_inputs, export_program
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer


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


def quantize_pt2e(program: ExportedProgram, spec: StageSpec, quantization: StageQuantization) -> ExportedProgram:
    """PT2E int8 with XNNPACK's quantizer: per-channel symmetric weights; activations static (ranges
    observed on the calibration inputs) or dynamic (linear layers and non-depthwise convolutions, whose inputs are
    quantized per call, outputs fp32; XNNPACK has no dynamic depthwise kernel, so those stay float).

    The image encoder arrives re-parameterized (BatchNorm folded, RepVGG branches merged: one convolution
    per layer to quantize, see `stages.image_encoder`). Ops XNNPACK has no int8 kernel for (batched
    matmuls, softmax, layer norm, GELU) stay fp32 between quantized ones.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import get_symmetric_quantization_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = quantization.scheme == "int8-dynamic"
    calls = [tuple(inputs[name] for name in spec.input_names) for inputs in quantization.calibration]
    if not calls:
        if not dynamic:
            raise EdgeTamExportError(f"{spec.name}: static int8 needs calibration inputs (sample pictures)")
        calls = [example_inputs(spec)]  # dynamic: one call so the weight observers see the weights
    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    module = _constants_in_their_modules(_rotations_as_slices(program.module()))
    chosen = set(quantization.selects(called_module_names(module), spec.name)) if quantization.modules else None
    quantizer = _scoped_quantizer(chosen)
    if chosen is None:
        quantizer.set_global(config)
    else:
        # The outermost chosen modules only: a name covers everything under it, and each name is one more pass of
        # every annotator over the graph (all names of a full-size image encoder: minutes).
        for name in sorted(n for n in chosen if not any(n.startswith(other + ".") for other in chosen)):
            quantizer.set_module_name(name, config)
    observed = prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for args in calls:
            observed(*args)
    return export_program(convert_pt2e(observed), spec)


#: The convolutions of an exported program (their weight is argument 1).
CONVOLUTIONS = (torch.ops.aten.conv2d.default, torch.ops.aten.convolution.default, torch.ops.aten.conv_transpose2d.input)


def is_dequantized(node: object) -> bool:
    """Whether a value of a PT2E program comes out of a dequantize: an int8 weight, or an input quantized before."""
    return isinstance(node, torch.fx.Node) and "dequantize" in str(node.target)


def int8_convolutions(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    """The convolutions of a PT2E program that take an int8 weight (float ones beside them, such as the decoder's
    mask upscaling under a scope, are left out)."""
    return [node for node in graph.nodes if node.target in CONVOLUTIONS and is_dequantized(node.args[1])]


def _constants_in_their_modules(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Give each constant (`get_attr`: a weight, a bias) the module stack of the nodes using it.

    XNNPACK's quantizer scopes a convolution pattern by a module name only if every node of the pattern, its
    weight included, lies in that module, and torch.export records no module for constants: a `[quantization_modules]`
    scope would quantize no convolution at all. A constant shared by several modules keeps no stack (not scoped);
    one module called several times is one module (its later calls differ only in the stack's keys).
    """
    for node in module.graph.nodes:
        if node.op != "get_attr" or node.meta.get("nn_module_stack"):
            continue
        stacks = [user.meta.get("nn_module_stack") or {} for user in node.users]
        if stacks and stacks[0] and all(list(stack.values()) == list(stacks[0].values()) for stack in stacks):
            node.meta["nn_module_stack"] = dict(stacks[0])
    return module


def _scoped_quantizer(chosen: set[str] | None) -> XNNPACKQuantizer:
    """XNNPACK's quantizer, with the operators it annotates held to the quantized scope: its concatenation annotator
    ignores module filters, and module-name configurations are applied before module-type exclusions, so without
    this a scoped stage would quantize concatenations anywhere and fixed operators (`FIXED_OPERATORS`) inside a
    scope. Shape-only operators (reshape, permute, slice) after a quantized output still share its int8, as XNNPACK
    propagates them everywhere. `chosen`: the module names to quantize (None: the whole stage)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import propagate_annotation
    from torchao.quantization.pt2e.quantizer.quantizer import Q_ANNOTATION_KEY

    # RoPE's exact +-1 swap, the mask upsampling, the averaging norms: float, whatever the scope.
    fixed = tuple(f"{kind.__module__}.{kind.__qualname__}" for kind in FIXED_OPERATORS)

    def in_scope(node: torch.fx.Node) -> bool:
        stack = (node.meta.get("nn_module_stack") or {}).values()
        if any(str(kind).endswith(fixed) for _, kind in stack):  # torch.export records type names as strings
            return False
        return chosen is None or bool(chosen & _module_path(node))

    class ScopedQuantizer(XNNPACKQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            model = self._annotate_for_quantization_config(model)
            for node in model.graph.nodes:
                if Q_ANNOTATION_KEY in node.meta and not in_scope(node):
                    del node.meta[Q_ANNOTATION_KEY]
            propagate_annotation(model)
            return model

    return ScopedQuantizer()


def _rotations_as_slices(module: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """RoPE's pair rotation (`PairRotation`, a float linear) rewritten as slices, a negation and a concatenation.

    Between the quantized projections, that float linear makes XNNPACK's partitioners (the dynamically quantized
    one and the general one) propose partitions with dependency cycles, which ExecuTorch refuses; the fp32 programs
    keep the linear, which XNNPACK runs in its delegate where the slices would run on portable kernels.
    """
    aten = torch.ops.aten
    rotation = f"{PairRotation.__module__}.{PairRotation.__qualname__}"
    for node in list(module.graph.nodes):
        stack = (node.meta.get("nn_module_stack") or {}).values()
        if node.target != aten.linear.default or not any(str(kind).endswith(rotation) or kind is PairRotation
                                                         for _, kind in stack):
            continue
        pairs = node.args[0]  # (..., D / 2, 2): the rotation swaps and negates within each pair
        with module.graph.inserting_before(node):
            second = module.graph.call_function(aten.slice.Tensor, (pairs, -1, 1, 2))
            first = module.graph.call_function(aten.slice.Tensor, (pairs, -1, 0, 1))
            negated = module.graph.call_function(aten.neg.default, (second,))
            rotated = module.graph.call_function(aten.cat.default, ([negated, first], -1))
        for new in (second, first, negated, rotated):
            new.meta["nn_module_stack"] = node.meta.get("nn_module_stack", {})
        node.replace_all_uses_with(rotated)
        module.graph.erase_node(node)
    module.graph.eliminate_dead_code()
    module.recompile()
    return module


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
    parameters = dict(module.named_parameters())
    for node in list(graph.nodes):
        # Weights that are parameters only: a buffer weight is a fixed operator (`FIXED_OPERATORS`).
        if node.target != aten.linear.default or node.args[1].op != "get_attr" or node.args[1].target not in parameters:
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
