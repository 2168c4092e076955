"""Where a lowered stage spends its time, per operator: ExecuTorch's ETDump (read by its Inspector) and ONNX
Runtime's profiler, on one stage lowered exactly as `export` lowers it (no parity gates: this is a
measurement, not a bundle).

The table separates what runs inside XNNPACK's delegate from the ExecuTorch kernels outside it, so a layout
or an op the partitioner refused shows up as its own row.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edgetam_export.backends import get_backend
from edgetam_export.benchmarking.bench import inputs_for_objects, largest_cases
from edgetam_export.export import export_program
from edgetam_export.quantization import StageQuantization
from edgetam_export.recipes import Recipe
from edgetam_export.reference import Reference
from edgetam_export.stages.registry import get_stage, stage_shapes
from edgetam_export.verification.samples import StageCase

#: ETDump events that frame others (their time is the sum of what they contain).
FRAMING_EVENTS = frozenset({"Method::execute", "DELEGATE_CALL", "OPERATOR_CALL", "Program::load_method",
                            "Method::init"})


@dataclass(frozen=True)
class OperatorTime:
    """One operator kind: `where` it runs, its median time per stage call and its calls per stage call."""

    where: str
    name: str
    ms: float
    calls: int


@dataclass
class StageProfile:
    stage: str
    recipe: str
    attention: str
    objects: int
    threads: int
    #: Median wall time of one stage call, as the runtime measured it.
    total_ms: float
    operators: list[OperatorTime] = field(default_factory=list)

    def markdown(self, rows: int = 12) -> str:
        """The largest `rows` operators as a Markdown table, then what the rest add up to."""
        title = (f"{self.stage}, {self.recipe} (attention {self.attention}), {self.objects} object(s), "
                 f"{self.threads} threads: {self.total_ms:.1f} ms per call")
        lines = [title, "", "| where | operator | ms | share | calls |", "|---|---|---|---|---|"]
        ranked = sorted(self.operators, key=lambda o: -o.ms)
        for op in ranked[:rows]:
            lines.append(f"| {op.where} | {op.name} | {op.ms:.1f} | {op.ms / self.total_ms:.1%} | {op.calls} |")
        rest = sum(op.ms for op in ranked[rows:])
        unaccounted = self.total_ms - sum(op.ms for op in ranked)
        lines.append(f"| | {len(ranked) - rows if len(ranked) > rows else 0} other operators | {rest:.1f} | "
                     f"{rest / self.total_ms:.1%} | |")
        lines.append(f"| | outside any operator (runtime, copies between partitions) | {unaccounted:.1f} | "
                     f"{unaccounted / self.total_ms:.1%} | |")
        return "\n".join(lines)


def profile_stage(reference: Reference, recipe: Recipe, stage: str, cases: list[StageCase], *, objects: int = 1,
                  runs: int = 3, threads: int = 2) -> StageProfile:
    """Lower `stage` under `recipe` (quantized as the recipe asks, even where `export` would fall back to float after a
    failed gate), run it once to warm up and `runs` times profiled on the largest of `cases` (`build_cases` of the
    recipe's stage shapes: the reference's sample inputs, built once for many profiles)."""
    if recipe.backend not in ("onnx", "executorch"):
        raise ValueError(f"no profiler for the {recipe.backend} backend here (Core ML profiles on macOS)")
    backend = get_backend(recipe.backend)
    model = reference.video_model
    shapes = stage_shapes(model, recipe.shapes)
    definition = get_stage(stage)
    spec = definition.spec(shapes)
    case = largest_cases([c for c in cases if c.stage == stage])[stage]
    inputs = {name: value.numpy() for name, value in inputs_for_objects(case.inputs, spec, objects).items()}
    program = export_program(definition.build(model, shapes, backend.stage_form(recipe)), spec)
    scheme = recipe.quantization.get(stage)
    # Static ranges from the cases' own inputs: a profile measures time, not the quality the gates hold.
    calibration = [c.inputs for c in cases if c.stage == stage] if scheme == "int8-static" else []
    quantization = StageQuantization(scheme, calibration, tuple(recipe.quantization_modules.get(stage, ()))) \
        if scheme else None
    with tempfile.TemporaryDirectory(prefix="edgetam-profile-") as folder:
        artifact = Path(folder) / f"{stage}{backend.suffix}"
        backend.lower(program, spec, recipe, artifact, quantization)
        ordered = [inputs[name] for name in spec.input_names]
        if recipe.backend == "onnx":
            total, operators = _onnx_profile(artifact, dict(zip(spec.input_names, ordered)), runs, threads, folder)
        else:
            total, operators = _etdump_profile(artifact, ordered, runs, threads, folder)
    return StageProfile(stage, recipe.name, recipe.attention, objects, threads, total, operators)


def _onnx_profile(artifact: Path, feed: dict[str, np.ndarray], runs: int, threads: int, folder: str
                  ) -> tuple[float, list[OperatorTime]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(folder) / "onnxruntime")
    session = ort.InferenceSession(str(artifact), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    calls = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"][1:]
    per_run: list[dict[str, float]] = []
    counts: dict[str, int] = defaultdict(int)
    for call in calls:
        times: dict[str, float] = defaultdict(float)
        for event in events:
            if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and \
                    call["ts"] <= event["ts"] <= call["ts"] + call["dur"]:
                times[event["args"]["op_name"]] += event["dur"] / 1000.0
                if call is calls[0]:
                    counts[event["args"]["op_name"]] += 1
        per_run.append(times)
    total = statistics.median(call["dur"] / 1000.0 for call in calls)
    return total, [OperatorTime("onnxruntime", name, statistics.median(r.get(name, 0.0) for r in per_run), counts[name])
                   for name in counts]


def _etdump_profile(artifact: Path, inputs: list[np.ndarray], runs: int, threads: int, folder: str
                    ) -> tuple[float, list[OperatorTime]]:
    from executorch.devtools import Inspector
    from executorch.extension.pybindings import portable_lib

    from edgetam_export.runtime.runners.executorch import load_llm_custom_ops, set_threadpool_size

    load_llm_custom_ops()
    set_threadpool_size(threads)
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    warm = portable_lib._load_for_executorch(str(artifact))
    warm.run_method("forward", tensors)  # XNNPACK packs its weights on the first call
    module = portable_lib._load_for_executorch(str(artifact), enable_etdump=True, debug_buffer_size=0)
    for _ in range(runs):
        module.run_method("forward", tensors)
    etdump = Path(folder) / "stage.etdp"
    module.write_etdump_result_to_file(str(etdump))
    times: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * runs)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    total = 0.0
    for block in Inspector(etdump_path=str(etdump)).event_blocks:
        for event in block.events:
            if event.perf_data is None or len(event.perf_data.raw) != runs:
                continue
            if event.name == "Method::execute":
                total = statistics.median(event.perf_data.raw)
            if event.name in FRAMING_EVENTS:
                continue
            key = ("XNNPACK", re.sub(r" #\d+$", "", event.name)) if event.is_delegated_op else \
                ("ExecuTorch kernel", event.name.removeprefix("native_call_"))
            for run, value in enumerate(event.perf_data.raw):
                times[key][run] += value
            counts[key] += 1
    return total, [OperatorTime(where, name, statistics.median(times[(where, name)]), counts[(where, name)])
                   for where, name in times]
