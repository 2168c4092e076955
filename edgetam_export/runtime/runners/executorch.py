"""ExecuTorch runners: the `.pte` through ExecuTorch's Python runtime (XNNPACK or portable kernels), and,
off macOS, the ML Program inside a Core ML-delegated `.pte` through the MIL interpreter."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.runners.base import on_macos, ordered_inputs
from edgetam_export.runtime.runners.interpreted import InterpretedRunner
from edgetam_export.stages.spec import ArtifactTensor, StageSpec


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what native code writes to file descriptor 2 meanwhile (ExecuTorch's cpuinfo probe prints five
    '[cpuinfo_utils.cpp]' lines on every program load); Python's own errors are raised, not printed."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_llm_custom_ops() -> None:
    """Register ExecuTorch's LLM ops (`llama::custom_sdpa`, the fused-attention recipes' kernel) with torch
    and with the runtime, which loads no program that uses them before."""
    importlib.import_module("executorch.extension.llm.custom_ops.custom_ops")


class ExecuTorchRunner:
    def __init__(self, artifact: Path, spec: StageSpec) -> None:
        logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)  # a deprecation notice on import
        from executorch.runtime import Runtime

        load_llm_custom_ops()

        self.spec = spec
        try:
            with native_stderr_silenced():
                self._method = Runtime.get().load_program(str(artifact)).load_method("forward")
        except (RuntimeError, ValueError) as exc:
            raise EdgeTamExportError(
                f"cannot load ExecuTorch program '{artifact}' ({short_reason(exc)}); re-export it"
            ) from None
        meta = self._method.metadata
        spec.check_artifact(artifact.name, [_declared(meta.input_tensor_meta(i)) for i in range(meta.num_inputs())],
                            [_declared(meta.output_tensor_meta(i)) for i in range(meta.num_outputs())])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        arrays = ordered_inputs(self.spec, inputs)
        tensors = [torch.from_numpy(a if a.flags.writeable else a.copy()) for a in arrays]
        objects = next((a.shape[0] for t, a in zip(self.spec.inputs, arrays) if t.has_objects_axis()), None)
        outputs = self._method.execute(tensors)
        if len(outputs) != len(self.spec.outputs):
            raise EdgeTamExportError(
                f"stage '{self.spec.name}' returned {len(outputs)} outputs, its contract names "
                f"{len(self.spec.outputs)} ({', '.join(self.spec.output_names)}); the artifact does not match the "
                "manifest: re-export the bundle"
            )
        # ExecuTorch 1.5.1's OpenVINO delegate fills an objects-axis output (the leading axis of every stage) at
        # its upper bound, max_objects rows, without resizing it: the rows past the objects given are not results.
        return {t.name: o.numpy()[:objects] if t.has_objects_axis() else o.numpy()
                for t, o in zip(self.spec.outputs, outputs)}


#: ExecuTorch's ScalarType codes of the dtypes a stage contract uses.
_SCALAR_TYPES = {3: "int32", 4: "int64", 5: "float16", 6: "float32"}


def _declared(meta) -> ArtifactTensor:
    """A program input or output as its method metadata declares it (no names; sizes at their upper bound)."""
    return ArtifactTensor(None, tuple(meta.sizes()), _SCALAR_TYPES.get(int(meta.dtype()), str(meta.dtype())))


class DelegatedCoreMLRunner(InterpretedRunner):
    """Off macOS: the ML Program inside a Core ML-delegated `.pte`, evaluated by the MIL interpreter."""

    def __init__(self, artifact: Path, spec: StageSpec) -> None:
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


def load_executorch(
    artifact: Path, spec: StageSpec, facts: dict, coreml_runtime: str | None = None, threads: int | None = None
):
    """A runner for one `.pte` (`facts`: the manifest's backend facts of the stage): ExecuTorch's runtime,
    or the interpreter for a Core ML delegate off macOS. `threads` resizes the process-wide threadpool
    that XNNPACK kernels run on."""
    if facts.get("delegate") == "coreml" and not on_macos():
        return DelegatedCoreMLRunner(artifact, spec)
    if threads:
        set_threadpool_size(threads)
    return ExecuTorchRunner(artifact, spec)


def set_threadpool_size(threads: int) -> int:
    """Resize ExecuTorch's process-wide threadpool (XNNPACK's kernels run on it); return its new size."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(threads)
    return int(portable_lib._threadpool_get_thread_count())
