"""`bench run` and `bench import`: latency, FPS and FLOPs of bundles beside eager PyTorch, and device runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.cli.app import DataOption, app, check_range, check_report, data_folder, examples, require_export_extra, say
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import CAPACITY_BOUNDS

MAX_THREADS = 256


def object_counts(text: str) -> tuple[int, ...]:
    """--objects '4,1,1' as the counts to measure, each once and in order: (1, 4)."""
    try:
        counts = tuple(sorted({int(n) for n in text.split(",")}))
    except ValueError:
        counts = ()
    most = CAPACITY_BOUNDS["max_objects"][1]
    if not counts or min(counts) < 1 or max(counts) > most:
        raise EdgeTamExportError(f"--objects '{text}' must be object counts from 1 to {most}, like 1,2,4,8")
    return counts


bench_app = typer.Typer(help="Benchmark bundles (latency, FPS, FLOPs) and merge device runs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("run", epilog=examples(
    "edgetam-export bench run models/edgetam-xnnpack models/edgetam-onnx --report out/bench.json "
    "--markdown out/BENCH.md",
))
def bench_run(
    bundles: Annotated[list[Path], typer.Argument(help="Bundles of the same weights, benchmarked side by side.")],
    report: Annotated[Path, typer.Option("--report", help="Results JSON to write.")],
    markdown: Annotated[
        Optional[Path], typer.Option("--markdown", help="Also render a Markdown report (plots beside it).")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per measurement.")] = 10,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed calls per measurement, and untimed tracked frames per video run, for every runtime."
    )] = 2,
    video_frames: Annotated[int, typer.Option("--video-frames", help="Frames of videos/bedroom to track.")] = 16,
    objects: Annotated[str, typer.Option("--objects", help="Object counts for video FPS.")] = "1,2,4,8",
    threads: Annotated[Optional[int], typer.Option(
        "--threads", help="Threads of every runtime (torch, ONNX Runtime, ExecuTorch's threadpool); default one per core."
    )] = None,
    data: DataOption = None,
) -> None:
    """Measure every stage, image mode and video FPS for the bundles and eager PyTorch, in one process."""
    from edgetam_export.bundle import read_bundle

    counts = object_counts(objects)
    check_range("--runs", runs, 1, 10_000)
    check_range("--warmup", warmup, 0, 1_000)
    if video_frames < warmup + 2:
        raise EdgeTamExportError(
            f"--video-frames must be at least --warmup + 2 (got {video_frames}): the prompt frame, the warm-up frames "
            "and one timed frame"
        )
    if threads is not None:
        check_range("--threads", threads, 1, MAX_THREADS, "; leave it out for one per core")
    check_report(report, "--report")
    check_report(markdown, "--markdown")
    for path in bundles:
        read_bundle(path, check_checksums=False)  # a missing bundle fails now, not after minutes
    say(f"bench: loading PyTorch, {len(bundles)} bundle(s) and the reference weights")
    require_export_extra("bench run")
    from edgetam_export.benchmarking.bench import run_benchmarks, validate
    from edgetam_export.benchmarking.report import write_report
    from edgetam_export.safe_output import write_text_atomic
    data = data_folder(data)
    results = run_benchmarks(bundles, data_dir=data, warmup=warmup, runs=runs, video_frames=video_frames,
                             object_counts=counts, threads=threads, progress=say)
    validate(results, "results.schema.json")
    check_report(report, "--report")
    check_report(markdown, "--markdown")
    write_text_atomic(report, json.dumps(results, indent=1) + "\n")
    typer.echo(f"results written to {report}")
    if markdown:
        write_report(results, markdown)
        typer.echo(f"report written to {markdown}")


@bench_app.command("import", epilog=examples(
    "edgetam-export bench import device.json --report out/bench.json --markdown out/BENCH.md",
))
def bench_import(
    device_run: Annotated[Path, typer.Argument(help="A device_run.schema.json file from the iOS demo or Android.")],
    report: Annotated[Path, typer.Option("--report", help="Results JSON to merge it into.")],
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Re-render this Markdown report.")] = None,
) -> None:
    """Validate a device benchmark run and merge it into a results file."""
    require_export_extra("bench import")
    from edgetam_export.benchmarking.bench import merge_device_run

    check_report(report, "--report")
    check_report(markdown, "--markdown")
    from edgetam_export.benchmarking.report import write_report

    results = merge_device_run(report, device_run)
    typer.echo(f"merged {device_run} into {report} ({len(results['device_runs'])} device runs)")
    if markdown:
        write_report(results, markdown)
