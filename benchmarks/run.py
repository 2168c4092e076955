"""Standard benchmark matrix: export the full-size model for each CPU recipe (fp32, int8 and bf16; ExecuTorch on
XNNPACK and OpenVINO, ONNX Runtime), benchmark them side by side with eager PyTorch in one process, and write
benchmarks/results/<name>.json and benchmarks/REPORT.md. The reduced-precision exports run their quality gates (a
200-frame tracking session each; transformers' side is run once for all of them), so the whole matrix takes over
an hour on 2 cores; `--gate-frames` shortens the sessions and the manifests record it.
Bundles are always exported by this process (into --models, replacing earlier bench bundles), so the
report's export times are measured in the same run as its latencies.

    python benchmarks/run.py                      # full size, every recipe below
    python benchmarks/run.py --recipes onnx-fp32 onnx-int8
    python benchmarks/run.py --gate-frames 50 --runs 5 --video-frames 12 --objects 1,4
    python benchmarks/run.py --size tiny --name smoke --video-frames 5
    python benchmarks/run.py --recipes executorch-xnnpack-fp32 --objects 1,4 --kit \
        --name cpu-2core-xnnpack-kit --report REPORT-xnnpack-kit.md

`--kit` also runs each ExecuTorch XNNPACK bundle through `edgetam-kit bench` (EdgeTAMKit's Swift code on
ExecuTorch's C++ runtime, built by ios_demo/scripts/build-kit-cli.sh) with the same frames, runs, warm-up and
threads, right after the Python runtimes, and merges its device run into the results: the Swift row beside the
Python runtime on the same bundle, with the host time of each frame.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
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
RECIPES = ("executorch-xnnpack-fp32", "onnx-fp32", "executorch-xnnpack-int8", "onnx-int8", "executorch-openvino-bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="full", choices=["full", "tiny"])
    parser.add_argument("--name", default="cpu-2core-full")
    parser.add_argument("--models", type=Path, default=HERE.parent / "models")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--video-frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="threads of every runtime (default: one per core)")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), help="recipes to export and benchmark")
    parser.add_argument("--objects", default="1,2,4,8", help="object counts for video FPS")
    parser.add_argument("--report", default="REPORT.md", help="Markdown report to write in benchmarks/")
    parser.add_argument("--gate-frames", type=int, default=None,
                        help="frames of the reduced-precision recipes' tracking gates (default: the recipes' 200)")
    parser.add_argument("--kit", action="store_true", help="also time ExecuTorch XNNPACK bundles with edgetam-kit")
    args = parser.parse_args()
    object_counts = tuple(int(count) for count in args.objects.split(","))

    kit = build_kit() if args.kit else None  # before the hour of work, so a build failure costs nothing
    reference = random_reference(seed=0, size=args.size)
    data_dir = default_data_dir()
    paths, export_seconds = [], {}
    for recipe in args.recipes:
        out = args.models / f"bench-{args.size}-{recipe}"
        started = time.perf_counter()
        chosen = load_recipe(recipe)
        chosen = chosen.with_gate_frames(args.gate_frames) if chosen.tracking_gate else chosen
        export_bundle(reference, chosen, out, data_dir=data_dir, progress=print, overwrite=True)
        export_seconds[recipe] = round(time.perf_counter() - started, 1)
        print(f"exported {out} in {export_seconds[recipe]:.0f} s")
        read_bundle(out)
        paths.append(out)
    results = run_benchmarks(paths, data_dir=data_dir, runs=args.runs, video_frames=args.video_frames,
                             object_counts=object_counts, threads=args.threads, progress=print)
    if kit:
        for path in paths:
            if read_bundle(path).manifest.recipe.delegate == "xnnpack":
                results["device_runs"].append(kit_run(kit, path, data_dir, results["settings"]))
    for entry in results["bundles"]:
        entry["export_wall_seconds_this_run"] = export_seconds[entry["runtime"]]
    validate(results, "results.schema.json")
    target = HERE / "results" / f"{args.name}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=1) + "\n")
    notes = notes_for(args.report)
    write_report(results, HERE / args.report, notes.read_text() if notes.exists() else "")
    print(f"wrote {target} and {HERE / args.report}")


def notes_for(report: str) -> Path:
    """The hand-written notes appended to a report: NOTES.md for REPORT.md, NOTES-<name>.md for REPORT-<name>.md."""
    return HERE / ("NOTES.md" if report == "REPORT.md" else report.replace("REPORT", "NOTES", 1))


def build_kit() -> Path:
    """The release edgetam-kit, built against this environment's executorch wheel."""
    built = subprocess.run([str(HERE.parent / "ios_demo" / "scripts" / "build-kit-cli.sh"), "release"],
                           capture_output=True, text=True, check=True, env={**os.environ, "PYTHON": sys.executable})
    return Path(built.stdout.strip().splitlines()[-1])


def kit_run(kit: Path, bundle: Path, data_dir: Path, settings: dict) -> dict:
    """`edgetam-kit bench` on one bundle with the Python run's settings; its device run, validated."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run.json"
        subprocess.run([str(kit), "bench", str(bundle), "--out", str(out), "--frames", str(settings["video_frames"]),
                        "--objects", ",".join(map(str, settings["object_counts"])), "--runs", str(settings["runs"]),
                        "--warmup", str(settings["warmup"]), "--threads", str(settings["threads"]),
                        "--video", str(data_dir / "videos" / "bedroom")], check=True)
        run = json.loads(out.read_text())
    validate(run, "device_run.schema.json")
    return run


if __name__ == "__main__":
    main()
