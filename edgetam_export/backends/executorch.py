"""ExecuTorch backend: `.pte` programs, delegated to XNNPACK, to Core ML, or on portable kernels only, run
with the ExecuTorch Python runtime here and with the same files on Android / iOS.

A Core ML-delegated program is lowered whole (one Core ML partition, nothing left to portable kernels),
so off macOS its single delegated ML Program can be taken out of the `.pte` and evaluated with the
MIL interpreter, as `.mlpackage` bundles are; on macOS the ExecuTorch runtime runs it through Core ML.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgetam_export.backends.base import Backend, ordered_inputs
from edgetam_export.backends.coreml import InterpretedRunner, coreml_target, on_macos
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

    from edgetam_export.recipes import Recipe

DELEGATES = ("xnnpack", "coreml", None)


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
        partitioners, facts = [], {"delegate": recipe.delegate}
        if recipe.delegate == "xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

            partitioners.append(XnnpackPartitioner())
        elif recipe.delegate == "coreml":
            partitioners.append(_coreml_partitioner(recipe))
            facts |= {"precision": recipe.precision, "deployment_target": recipe.deployment_target or "iOS17",
                      "compute_units": recipe.compute_units or "ALL"}
        edge = to_edge_transform_and_lower(program, partitioner=partitioners)
        delegated, portable = count_delegation(edge.exported_program().graph_module)
        if recipe.delegate == "coreml" and (delegated, portable) != (1, 0):
            raise EdgeTamExportError(
                f"{spec.name}: Core ML took {delegated} partitions and left {portable} operators to portable "
                "kernels; the executorch-coreml recipes need the whole stage in one Core ML partition"
            )
        artifact.write_bytes(edge.to_executorch().buffer)
        return facts | {"delegated_partitions": delegated, "portable_ops": portable}

    def load(self, artifact: Path, spec: StageSpec, manifest_stage: dict) -> ExecuTorchRunner | InterpretedRunner:
        if manifest_stage.get("backend", {}).get("delegate") == "coreml" and not on_macos():
            return DelegatedCoreMLRunner(artifact, spec)
        return ExecuTorchRunner(artifact, spec)

    def versions(self) -> dict[str, str]:
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


class DelegatedCoreMLRunner(InterpretedRunner):
    """Off macOS: the ML Program inside a Core ML-delegated `.pte`, evaluated by the MIL interpreter."""

    def __init__(self, artifact: Path, spec: StageSpec) -> None:
        import tempfile

        self._folder = tempfile.TemporaryDirectory(prefix="edgetam-coreml-delegate-")
        package, names = extract_coreml_delegate(artifact, Path(self._folder.name))
        super().__init__(package, spec, names)


def extract_coreml_delegate(artifact: Path, folder: Path) -> tuple[Path, tuple[list[str], list[str]]]:
    """Write the single Core ML delegate of a `.pte` to `folder`; return its `.mlpackage` path and the
    delegate's names of the program's inputs and outputs, in program order. The delegate call may
    order its outputs differently from the program, so they are matched through the call's values."""
    import json

    from executorch.backends.apple.coreml import executorchcoreml
    from executorch.exir._serialize._program import deserialize_pte_binary

    try:
        program = deserialize_pte_binary(artifact.read_bytes()).program
    except Exception as exc:  # the flatbuffer reader raises assorted errors on damaged files
        raise EdgeTamExportError(f"cannot read ExecuTorch program '{artifact}' ({str(exc)[:80]}); re-export it") from None
    plan = program.execution_plan[0]
    calls = [i.instr_args for chain in plan.chains for i in chain.instructions]
    if (
        len(program.execution_plan) != 1 or len(plan.delegates) != 1 or plan.delegates[0].id != "CoreMLBackend"
        or plan.delegates[0].processed.location.name != "INLINE" or len(calls) != 1
    ):
        raise EdgeTamExportError(f"'{artifact}' is not a program delegated whole to Core ML; re-export it")
    payload = program.backend_delegate_data[plan.delegates[0].processed.index].data
    folder.mkdir(parents=True, exist_ok=True)
    if not executorchcoreml.unflatten_directory_contents(bytes(payload), str(folder)):
        raise EdgeTamExportError(f"the Core ML delegate of '{artifact}' cannot be unpacked; re-export it")
    lowered = folder / "lowered_module"
    metadata = json.loads((lowered / "metadata.json").read_text())
    values = calls[0].args  # the delegate's inputs, then its outputs, as program value indices
    inputs = dict(zip(values[: len(metadata["inputNames"])], metadata["inputNames"]))
    outputs = dict(zip(values[len(metadata["inputNames"]) :], metadata["outputNames"]))
    if not set(plan.outputs) <= set(outputs):
        raise EdgeTamExportError(f"'{artifact}' has outputs computed outside its Core ML delegate; re-export it")
    # A program input the stage does not use (a model without an occlusion embedding) has no delegate name.
    return lowered / "model.mlpackage", ([inputs.get(v) for v in plan.inputs], [outputs[v] for v in plan.outputs])


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
