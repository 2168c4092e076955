"""fp16 on XNNPACK: does `model.half()` before export pay on this CPU? The two stages that dominate a tracked
frame (image encoder, memory attention), full size, lowered twice with the same partitioner: as exported
(fp32) and with weights and activations in fp16 (inputs cast to fp16 at entry, outputs back to fp32). Each
is run on the parity cases (cosine against the fp32 reference, non-finite outputs counted) and timed in
turns in one process. Writes benchmarks/results/fp16_xnnpack.json; the verdict is in benchmarks/NOTES.md.

    python benchmarks/fp16_xnnpack.py                  # full size, ~5 minutes on 2 cores
    python benchmarks/fp16_xnnpack.py --size tiny --name fp16_smoke
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from edgetam_export.backends import get_backend
from edgetam_export.benchmarking.bench import code_commit, inputs_for_objects, machine, time_in_turns
from edgetam_export.stages.program import export_program
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.runtime.runners.executorch import ExecuTorchRunner, set_threadpool_size
from edgetam_export.verification.sample_data import default_data_dir
from edgetam_export.verification.samples import build_cases
from edgetam_export.stages.registry import STAGES, stage_shapes
from edgetam_export.stages.spec import StageSpec

HERE = Path(__file__).resolve().parent
STAGE_NAMES = ("image_encoder", "memory_attention")


def half_precision(module: torch.nn.Module, spec: StageSpec) -> torch.nn.Module:
    """The stage in fp16 behind the stage's fp32 contract (same input names, so torch.export sees its signature)."""
    names = ", ".join(spec.input_names)
    namespace: dict = {}
    exec(  # a forward with the contract's named arguments; *args would hide them from torch.export
        f"def forward(self, {names}):\n"
        f"    outputs = self.inner(*[t.half() if t.is_floating_point() else t for t in ({names},)])\n"
        "    return tuple(t.float() if t.is_floating_point() else t for t in outputs)\n",
        namespace,
    )
    wrapper = type("HalfPrecisionStage", (torch.nn.Module,), {"forward": namespace["forward"]})()
    wrapper.inner = module.half()
    return wrapper


def cosine(expected: np.ndarray, got: np.ndarray) -> float | None:
    """Cosine similarity, or None when the output is not finite (fp16 overflow)."""
    a, b = expected.astype(np.float64).ravel(), got.astype(np.float64).ravel()
    if not np.isfinite(b).all():
        return None
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--name", default="fp16_xnnpack")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    reference = random_reference(seed=0, size=args.size)
    # One object, static shapes: the fp16 graph specializes the objects axis, so both lowerings get it fixed.
    recipe = load_recipe("executorch-xnnpack-fp32").with_shapes(max_objects=1)
    shapes = stage_shapes(reference.video_model, recipe.shapes)
    cases = build_cases(reference, shapes, default_data_dir())
    threads = set_threadpool_size(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in STAGE_NAMES:
            stage, spec = STAGES[name], STAGES[name].spec(shapes)
            runners, lowering = {}, {}
            for precision in ("fp32", "fp16"):
                module = stage.build(reference.video_model, shapes, get_backend("executorch").stage_form(recipe))
                module = half_precision(module, spec) if precision == "fp16" else module
                artifact = Path(scratch) / f"{name}-{precision}.pte"
                started = time.perf_counter()
                facts = get_backend("executorch").lower(export_program(module, spec), spec, recipe, artifact)
                lowering[precision] = {"seconds": round(time.perf_counter() - started, 1),
                                       "size_bytes": artifact.stat().st_size} | facts
                runners[precision] = ExecuTorchRunner(artifact, spec)
            quality = {precision: [] for precision in runners}
            mine = [case for case in cases if case.stage == name]
            for case in mine:
                expected = stage.upstream(reference.video_model, shapes, case.inputs)
                for precision, runner in runners.items():
                    got = runner.run({k: v.numpy() for k, v in case.inputs.items()})
                    quality[precision] += [cosine(value.numpy(), got[output]) for output, value in expected.items()]
            feed = {k: v.numpy() for k, v in inputs_for_objects(mine[-1].inputs, spec, 1).items()}
            timing = time_in_turns({p: (lambda r=r: r.run(feed)) for p, r in runners.items()}, warmup=2, runs=args.runs)
            for precision in runners:
                finite = [c for c in quality[precision] if c is not None]
                rows.append({
                    "stage": name, "precision": precision, "case": mine[-1].label, **timing[precision],
                    "vs_fp32": round(timing[precision]["p50_ms"] / timing["fp32"]["p50_ms"], 3),
                    "min_cosine": min(finite) if finite else None,
                    "non_finite_outputs": len(quality[precision]) - len(finite), "outputs": len(quality[precision]),
                    "lowering": lowering[precision],
                })
                print(f"{name} {precision}: p50 {timing[precision]['p50_ms']:.1f} ms ({rows[-1]['vs_fp32']:.2f}x fp32), "
                      f"min cosine {rows[-1]['min_cosine']}, non-finite {rows[-1]['non_finite_outputs']}/{len(quality[precision])}")
    document = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": code_commit(),
        "machine": machine(), "threads": {"executorch_threadpool": threads}, "size": args.size,
        "model": reference.describe(), "rows": rows,
    }
    target = HERE / "results" / f"{args.name}.json"
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
