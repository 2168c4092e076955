"""What every runner shares: the runner interface, inputs in contract order, and where Core ML can run."""

from __future__ import annotations

import platform
import time
from typing import Protocol

import numpy as np

from edgetam_export.bundle import Bundle
from edgetam_export.stages.spec import StageSpec

#: `coreml_runtime` that evaluates Core ML programs with the NumPy MIL interpreter (any platform).
INTERPRETER = "mil-interpreter"


def on_macos() -> bool:
    return platform.system() == "Darwin"


class StageRunner(Protocol):
    """A loaded stage artifact: named NumPy inputs in, named NumPy outputs out."""

    spec: StageSpec

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def ordered_inputs(spec: StageSpec, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Inputs in the contract's order, contiguous and of the contract's dtypes."""
    spec.check_inputs(inputs)
    return [np.ascontiguousarray(inputs[t.name], dtype=t.numpy_dtype) for t in spec.inputs]


class BatchedStages:
    """A bundle's loaded stages called for any number of objects: split into chunks of the bundle's `max_objects`
    (a per-image input of one row is shared by every chunk), every call timed per stage. The predictor and the
    tracker call their stages through it."""

    def __init__(self, runners: dict[str, StageRunner], max_objects: int) -> None:
        self.runners, self.max_objects = runners, max_objects
        #: Seconds spent in each stage since creation (host work between stage calls is not counted).
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call of one stage, timed."""
        started = time.perf_counter()
        outputs = self.runners[stage].run(inputs)
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started
        return outputs

    def run_batched(self, stage: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A stage over every object of `inputs`, in as few calls as the bundle's capacity allows."""
        per_object = {t.name for t in self.runners[stage].spec.inputs if t.has_objects_axis()}
        count = max(len(inputs[name]) for name in per_object)
        outputs: dict[str, list[np.ndarray]] = {}
        for start in range(0, count, self.max_objects):
            size = min(self.max_objects, count - start)
            chunk = {
                name: value if name not in per_object
                else np.broadcast_to(value, (size, *value.shape[1:])) if len(value) == 1 < count
                else value[start : start + size]
                for name, value in inputs.items()
            }
            for name, value in self.run(stage, chunk).items():
                outputs.setdefault(name, []).append(value)
        return {name: np.concatenate(values) for name, values in outputs.items()}


class BundleRuntime:
    """What the predictor and the tracker share: the bundle, its loaded stages (called through `BatchedStages`) and
    the sizes their inputs are packed to."""

    def __init__(self, bundle: Bundle, runners: dict[str, StageRunner]) -> None:
        self.bundle, self.runners = bundle, runners
        shapes = bundle.manifest.shapes
        self.image_size, self.point_slots, self.max_objects = shapes.image_size, shapes.point_slots, shapes.max_objects
        #: Every stage call goes through it: chunks of max_objects, timed per stage (`stages.seconds`).
        self.stages = BatchedStages(runners, self.max_objects)
