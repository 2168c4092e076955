"""The NumPy MIL interpreter behind the runner interface: Core ML programs evaluated off macOS (an `.mlpackage`, or
the Core ML delegate taken out of a `.pte`), the saved ML Program and not the Core ML runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgetam_export.runtime.runners.base import ordered_inputs
from edgetam_export.stages.spec import ArtifactTensor, StageSpec


class InterpretedRunner:
    """The NumPy MIL interpreter behind the runner interface (Linux, or on request)."""

    def __init__(
        self, artifact: Path, spec: StageSpec, names: tuple[list[str | None], list[str]] | None = None
    ) -> None:
        """`names`: the program's own names of the spec's inputs (None: unused) and outputs, in spec
        order, where they differ from the spec's (a delegate names its outputs after graph nodes)."""
        from edgetam_export.runtime.mil_interpreter import MILInterpreter

        self.spec = spec
        self.interpreter = MILInterpreter(artifact)
        self.input_names, self.output_names = names or (spec.input_names, spec.output_names)
        function = self.interpreter.function
        declared_outputs = {var.name: var for var in function.outputs}
        spec.check_artifact(
            artifact.name,
            [_declared(own, name, function.inputs) for own, name in zip(self.input_names, spec.input_names)],
            [_declared(own, name, declared_outputs) for own, name in zip(self.output_names, spec.output_names)]
            + [ArtifactTensor(own, None, None) for own in declared_outputs if own not in self.output_names],
        )

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: array for name, array in zip(self.input_names, ordered_inputs(self.spec, inputs)) if name}
        outputs = self.interpreter.run(feed)
        return {name: outputs[own].astype(np.float32) for name, own in zip(self.spec.output_names, self.output_names)}


def _declared(own: str | None, name: str, program_vars: dict) -> ArtifactTensor:
    """The program's variable for a contract tensor (its own name `own`; None: an input the program does not use),
    named as the contract when present; fp16 programs keep float32 contracts, so dtypes are not compared."""
    if own is None:
        return ArtifactTensor(None, None, None)
    if own not in program_vars:
        return ArtifactTensor(f"(none named {own})", None, None)
    shape = tuple(d if isinstance(d, int) else None for d in program_vars[own].shape)
    return ArtifactTensor(name, shape, None)
