"""Test support: record every stage call of a runtime session, in order, with its inputs and outputs.

A recording is the golden session that EdgeTAMKit's `ReplayStageRunner` replays (Swift must call the
stages in the same order with the same inputs and write the same masks), and the way to compare any
other runtime with this one call for call. On disk: `calls.json` (stage, and per tensor its shape,
dtype and file) and one little-endian raw file per tensor under `tensors/`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgetam_export.runtime.runners.base import StageRunner, ordered_inputs


@dataclass
class StageCall:
    """One call of one stage: its inputs as the runner received them (contract order and dtypes), its outputs."""

    stage: str
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


@dataclass
class CallLog:
    """The calls of a session, in the order the runtime made them."""

    calls: list[StageCall] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        """Write `calls.json` and the tensors under `folder` (created; it must not hold another recording)."""
        tensors = folder / "tensors"
        tensors.mkdir(parents=True, exist_ok=False)
        index = []
        for number, call in enumerate(self.calls):
            entry: dict = {"stage": call.stage}
            for side, values in (("inputs", call.inputs), ("outputs", call.outputs)):
                entry[side] = {}
                for name, value in values.items():
                    file = f"tensors/{number:04d}-{side[:-1]}-{name}.bin"
                    array = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
                    (folder / file).write_bytes(array.tobytes())
                    entry[side][name] = {"shape": list(array.shape), "dtype": str(value.dtype), "file": file}
            index.append(entry)
        (folder / "calls.json").write_text(json.dumps(index, indent=1) + "\n")


class RecordingRunner:
    """A runner that runs another one and logs the call."""

    def __init__(self, runner: StageRunner, log: CallLog) -> None:
        self.spec = runner.spec
        self._runner = runner
        self._log = log

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        received = dict(zip(self.spec.input_names, (a.copy() for a in ordered_inputs(self.spec, inputs))))
        outputs = self._runner.run(inputs)
        self._log.calls.append(StageCall(self.spec.name, received, {k: np.array(v) for k, v in outputs.items()}))
        return outputs


def recording(runners: dict[str, StageRunner], log: CallLog) -> dict[str, StageRunner]:
    """The same runners, each logging its calls into `log`."""
    return {name: RecordingRunner(runner, log) for name, runner in runners.items()}
