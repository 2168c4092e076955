"""Standard benchmark matrix: export the full-size model for each CPU recipe (fp32 and int8, ExecuTorch and
ONNX Runtime), benchmark them side by side with eager PyTorch in one process, and write
benchmarks/results/<name>.json and benchmarks/REPORT.md. The int8 exports run their quality gates (a
200-frame tracking session each), so the whole matrix takes over an hour on 2 cores.
Bundles are always exported by this process (into --models, replacing earlier bench bundles), so the
report's export times are measured in the same run as its latencies.

    python benchmarks/run.py                      # full size, every recipe below
    python benchmarks/run.py --recipes onnx-fp32 onnx-int8
    python benchmarks/run.py --size tiny --name smoke --video-frames 5
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from edgetam_export.benchmarking.bench import run_benchmarks, validate
from edgetam_export.benchmarking.report import write_report
from edgetam_export.bundle import read_bundle
from edgetam_export.export import export_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.verification.sample_data import default_data_dir

HERE = Path(__file__).resolve().parent
RECIPES = ("executorch-xnnpack-fp32", "onnx-fp32", "executorch-xnnpack-int8", "onnx-int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--name", default="cpu-2core-full")
    parser.add_argument("--models", type=Path, default=HERE.parent / "models")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--video-frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: one per core)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes to export and benchmark")
    args = parser.parse_args()

    reference = random_reference(seed=0, size=args.size)
    data_dir = default_data_dir()
    paths, export_seconds = [], {}
    for recipe in args.recipes:
        out = args.models / f"bench-{args.size}-{recipe}"
        started = time.perf_counter()
        export_bundle(reference, load_recipe(recipe), out, data_dir=data_dir, progress=print, overwrite=True)
        export_seconds[recipe] = round(time.perf_counter() - started, 1)
        print(f"exported {out} in {export_seconds[recipe]:.0f} s")
        read_bundle(out)
        paths.append(out)
    results = run_benchmarks(paths, data_dir=data_dir, runs=args.runs, video_frames=args.video_frames,
                             threads=args.threads, progress=print)
    for entry in results["bundles"]:
        entry["export_wall_seconds_this_run"] = export_seconds[entry["runtime"]]
    validate(results, "results.schema.json")
    target = HERE / "results" / f"{args.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1) + "\n")
    notes = HERE / "NOTES.md"
    write_report(results, HERE / "REPORT.md", notes.read_text() if notes.exists() else "")
    print(f"wrote {target} and {HERE / 'REPORT.md'}")


if __name__ == "__main__":
    main()
