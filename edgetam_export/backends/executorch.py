"""ExecuTorch backend: `.pte` programs, delegated to XNNPACK (or portable kernels only), run with the
ExecuTorch Python runtime here and with the same files on Android / iOS."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgetam_export.backends.base import Backend, ordered_inputs
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DELEGATES = ("xnnpack", None)


class ExecuTorchRunner:
    def __init__(self, artifact: Path, spec: StageSpec) -> None:
        from executorch.runtime import Runtime

        self.spec = spec
        try:
            self._method = Runtime.get().load_program(str(artifact)).load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise EdgeTamExportError(f"cannot load ExecuTorch program '{artifact}' ({exc}); re-export it") from None

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        tensors = [torch.from_numpy(a if a.flags.writeable else a.copy()) for a in ordered_inputs(self.spec, inputs)]
        outputs = self._method.execute(tensors)
        return {t.name: o.numpy() for t, o in zip(self.spec.outputs, outputs)}


class ExecuTorchBackend(Backend):
    name = "executorch"
    suffix = ".pte"

    def lower(self, program: ExportedProgram, spec: StageSpec, recipe: Recipe, artifact: Path) -> dict:
        from executorch.exir import to_edge_transform_and_lower

        if recipe.delegate not in DELEGATES:
            raise EdgeTamExportError(
                f"recipe '{recipe.name}': ExecuTorch delegate '{recipe.delegate}' is not supported here; "
                f"use one of {[d for d in DELEGATES if d]} or none"
            )
        partitioners = []
        if recipe.delegate == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            partitioners.append(XnnpackPartitioner())
        edge = to_edge_transform_and_lower(program, partitioner=partitioners)
        delegated, portable = count_delegation(edge.exported_program().graph_module)
        artifact.write_bytes(edge.to_executorch().buffer)
        return {"delegate": recipe.delegate, "delegated_partitions": delegated, "portable_ops": portable}

    def load(self, artifact: Path, spec: StageSpec, manifest_stage: dict) -> ExecuTorchRunner:
        return ExecuTorchRunner(artifact, spec)

    def versions(self) -> dict[str, str]:
        return {"executorch": version("executorch")}


def count_delegation(graph_module: torch.fx.GraphModule) -> tuple[int, int]:
    """(delegated partitions, operators left to portable kernels) of a lowered edge program."""
    delegated = portable = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        name = getattr(node.target, "__name__", str(node.target))
        if "executorch_call_delegate" in name:
            delegated += 1
        elif not name.startswith("getitem") and "sym_size" not in name:
            portable += 1
    return delegated, portable
