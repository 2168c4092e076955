"""A stage wrapper as a `torch.export` program: the first step of every export, before any quantization or
lowering (`backends/`), which also re-export a program they rewrote through it."""

from __future__ import annotations

import torch
from torch.export import Dim, ExportedProgram

from edgetam_export.stages.spec import OBJECTS, StageSpec


def example_inputs(spec: StageSpec, num_objects: int = 2, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random inputs of a contract's shapes and dtypes, to trace a stage (never to judge parity)."""
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for tensor in spec.inputs:
        shape = tensor.concrete_shape(num_objects)
        if tensor.dtype == "int32":
            tensors.append(torch.randint(0, 2, shape, generator=generator, dtype=torch.int32))
        else:
            tensors.append(torch.randn(shape, generator=generator))
    return tuple(tensors)


def export_program(module: torch.nn.Module, spec: StageSpec) -> ExportedProgram:
    """torch.export a stage wrapper; the objects axis becomes a dynamic dimension bounded by the recipe."""
    dynamic = None
    if spec.has_objects_axis() and spec.max_objects > 1:
        objects = Dim("objects", min=1, max=spec.max_objects)
        dynamic = tuple({t.shape.index(OBJECTS): objects} if t.has_objects_axis() else None for t in spec.inputs)
    example = example_inputs(spec, num_objects=min(2, spec.max_objects))
    with torch.no_grad():
        return torch.export.export(module, example, dynamic_shapes=dynamic, strict=False)
