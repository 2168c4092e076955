"""`edgetam-export`: a thin Typer layer over the Python API (every command is a few lines over it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.errors import EdgeTamExportError

app = typer.Typer(
    name="edgetam-export",
    help="Export EdgeTAM to ExecuTorch, Core ML and ONNX bundles, verify them against transformers, run them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="Weights: 'random', a Hugging Face model folder, an original edgetam.pt, or a hub id "
        "(yonigozlan/edgetam-1).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for --model random.")]
SizeOption = Annotated[
    str, typer.Option("--size", help="Architecture for --model random or a checkpoint: 'full' (EdgeTAM) or 'tiny'.")
]
DataOption = Annotated[
    Optional[Path],
    typer.Option("--data", help="Folder with images/ and videos/bedroom/ for parity inputs (default: ../shared/data)."),
]


def _say(message: str) -> None:
    typer.echo(f"  {message}", err=True)


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write (replaced atomically).")] = Path(
        "models/edgetam"
    ),
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe name (see 'recipes') or a .toml file.")] = (
        "executorch-xnnpack-fp32"
    ),
    model: ModelOption = "random",
    seed: SeedOption = 0,
    size: SizeOption = "full",
    max_objects: Annotated[Optional[int], typer.Option("--max-objects", help="Override the recipe.")] = None,
    point_slots: Annotated[Optional[int], typer.Option("--point-slots", help="Override the recipe.")] = None,
    memory_slots: Annotated[Optional[int], typer.Option("--memory-slots", help="Override the recipe.")] = None,
    data: DataOption = None,
) -> None:
    """Export the EdgeTAM stages under a recipe into a verified bundle."""
    from edgetam_export.backends import get_backend
    from edgetam_export.export import export_bundle
    from edgetam_export.recipes import load_recipe
    from edgetam_export.reference import load_reference

    chosen = load_recipe(recipe).with_shapes(
        max_objects=max_objects, point_slots=point_slots, memory_slots=memory_slots
    )
    get_backend(chosen.backend)  # an unknown backend fails before the model is loaded
    typer.echo(f"loading reference '{model}'", err=True)
    reference = load_reference(model, seed=seed, size=size)
    typer.echo(f"exporting with recipe '{chosen.name}' to {out}", err=True)
    bundle = export_bundle(reference, chosen, out, data_dir=data, progress=_say)
    worst = min(s["min_psnr_db"] for s in bundle.manifest["parity"]["summary"].values())
    typer.echo(f"wrote {bundle.path} ({len(bundle.stage_names)} stages, parity passed, worst PSNR {worst} dB)")


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the parity report JSON here.")] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Reference weights (default: the source in the manifest).")
    ] = None,
    seed: SeedOption = 0,
    size: SizeOption = "full",
    data: DataOption = None,
    coreml_runtime: Annotated[
        Optional[str],
        typer.Option("--coreml-runtime", help="Core ML bundles: mil-interpreter (Linux default) or CPU_ONLY, "
                     "CPU_AND_GPU, CPU_AND_NE, ALL (macOS)."),
    ] = None,
) -> None:
    """Compare every stage of a bundle with the PyTorch reference; exit 1 on any failure."""
    from edgetam_export.export import verify_bundle
    from edgetam_export.reference import load_reference

    reference = load_reference(model, seed=seed, size=size) if model else None
    result = verify_bundle(bundle, reference, data_dir=data, coreml_runtime=coreml_runtime)
    typer.echo(f"runtime: {result.runtime}")
    typer.echo(result.table())
    for note in result.notes:
        typer.echo(f"note: {note}")
    if report:
        result.write(report)
        typer.echo(f"report written to {report}")
    if not result.passed:
        typer.echo(f"FAILED: {len(result.failures)} outputs below the recipe's thresholds", err=True)
        for failure in result.failures:
            typer.echo(f"  {failure}", err=True)
        raise typer.Exit(1)
    typer.echo(f"passed: {len(result.results)} outputs at or above {result.thresholds.min_psnr_db} dB PSNR")


@app.command()
def info(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")]) -> None:
    """Show a bundle's model, recipe, stages (inputs, outputs, sizes) and parity."""
    from edgetam_export.bundle import read_bundle

    opened = read_bundle(bundle)
    manifest = opened.manifest
    recipe = manifest["recipe"]
    typer.echo(f"bundle   {opened.path}  (format {manifest['format_version']}, created {manifest['created']})")
    typer.echo(f"model    {manifest['model']['source']} size={manifest['model']['size']} "
               f"weights={manifest['model']['weights_sha256'][:12]}")
    typer.echo(f"recipe   {recipe['name']}: {recipe['backend']} {recipe.get('delegate') or ''} {recipe['precision']}")
    for name in opened.stage_names:
        record = manifest["stages"][name]
        spec = opened.spec(name)
        typer.echo(f"stage    {name}: {record['artifact']} {record['size_bytes'] / 1e6:.1f} MB "
                   f"sha256={record['sha256'][:12]}")
        for tensor in spec.inputs:
            typer.echo(f"    in   {tensor.name:<22} {tensor.dtype:<8} {list(tensor.shape)}")
        for tensor in spec.outputs:
            typer.echo(f"    out  {tensor.name:<22} {tensor.dtype:<8} {list(tensor.shape)}")
    parity = manifest.get("parity")
    if parity:
        typer.echo(f"parity   {'passed' if parity['passed'] else 'FAILED'} ({parity['runtime']})")
        for stage, entry in parity["summary"].items():
            typer.echo(f"    {stage:<18} min PSNR {entry['min_psnr_db']} dB, max-abs {entry['max_abs']}")


@app.command()
def recipes() -> None:
    """List the shipped export recipes."""
    from edgetam_export.recipes import available_recipes, load_recipe

    for name in available_recipes():
        recipe = load_recipe(name)
        typer.echo(f"{name:<28} {recipe.description}")


@app.command("stages")
def stages_command(
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe whose capacities to show.")] = (
        "executorch-xnnpack-fp32"
    ),
    size: SizeOption = "full",
) -> None:
    """Print the stage contracts (names, shapes, dtypes, meanings) as JSON."""
    from transformers import EdgeTamVideoModel

    from edgetam_export.recipes import load_recipe
    from edgetam_export.reference import build_video_config
    from edgetam_export.stages.registry import STAGES

    with __import__("torch").device("meta"):
        model = EdgeTamVideoModel(build_video_config(size))
    shapes = load_recipe(recipe).stage_shapes(model)
    typer.echo(json.dumps({name: stage.spec(shapes).to_json() for name, stage in STAGES.items()}, indent=2))


def _numbers(text: str, option: str, counts: tuple[int, ...], usage: str) -> tuple[int | None, list[float]]:
    """Parse '[OBJ:]a,b,...' into (object index or None, numbers), naming the option on a mistake."""
    obj, _, values = text.rpartition(":")
    try:
        numbers = [float(v) for v in values.split(",")]
        index = int(obj) if obj else None
    except ValueError:
        numbers, index = [], None
    if len(numbers) not in counts or (index is not None and index < 0):
        raise EdgeTamExportError(f"{option} '{text}' is not {usage}")
    return index, numbers


@app.command()
def segment(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (masks/, overlay.png, result.json).")],
    point: Annotated[
        Optional[list[str]],
        typer.Option("--point", help="[OBJ:]X,Y[,LABEL] in image pixels; LABEL 1 (default) or 0; OBJ defaults to 0."),
    ] = None,
    box: Annotated[
        Optional[list[str]],
        typer.Option("--box", help="[OBJ:]X0,Y0,X1,Y1 in image pixels; the n-th box without OBJ is object n."),
    ] = None,
    single_mask: Annotated[
        Optional[bool],
        typer.Option("--single-mask/--multimask", help="Default: 3 masks for one object, 1 per object for several."),
    ] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Segment everything (automatic mask generation).")] = False,
    points_per_side: Annotated[int, typer.Option("--points-per-side", help="--auto: grid size.")] = 32,
    points_per_batch: Annotated[int, typer.Option("--points-per-batch", help="--auto: prompts per batch.")] = 64,
    pred_iou_thresh: Annotated[float, typer.Option("--pred-iou-thresh", help="--auto: minimum predicted IoU.")] = 0.88,
    stability_thresh: Annotated[float, typer.Option("--stability-thresh", help="--auto: minimum stability.")] = 0.95,
    crop_layers: Annotated[int, typer.Option("--crop-layers", help="--auto: layers of image crops.")] = 0,
) -> None:
    """Segment one image with clicks and boxes, or everything with --auto; write masks and an overlay."""
    from edgetam_export.runtime.automatic import MaskGenerationSettings
    from edgetam_export.runtime.segment import BoxPrompt, PointPrompt, segment_image

    points = []
    for text in point or []:
        obj, numbers = _numbers(text, "--point", (2, 3), "[OBJ:]X,Y[,LABEL]")
        label = int(numbers[2]) if len(numbers) == 3 else 1
        points.append(PointPrompt(obj or 0, numbers[0], numbers[1], label))
    boxes = []
    for index, text in enumerate(box or []):
        obj, numbers = _numbers(text, "--box", (4,), "[OBJ:]X0,Y0,X1,Y1")
        boxes.append(BoxPrompt(index if obj is None else obj, *numbers))
    automatic = None
    if auto:
        automatic = MaskGenerationSettings(
            points_per_batch=points_per_batch, points_per_crop=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_thresh, crops_n_layers=crop_layers,
        )

    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 10) < points_per_batch:
            typer.echo(f"  prompts {done}/{total}", err=True)

    result = segment_image(
        bundle, image, out, points, boxes, None if single_mask is None else not single_mask, automatic, report
    )
    typer.echo(f"{result['objects']} objects, {len(result['masks'])} masks in {result['seconds']} s -> {out}")


@app.command()
def track(
    video: Annotated[Path, typer.Argument(help="Folder of frames or a video file.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (masks/, overlay.mp4, summary.json).")],
    point: Annotated[
        Optional[list[str]], typer.Option("--point", help="FRAME:OBJ:X,Y[,LABEL] in video pixels; LABEL 1 or 0.")
    ] = None,
    box: Annotated[Optional[list[str]], typer.Option("--box", help="FRAME:OBJ:X0,Y0,X1,Y1 in video pixels.")] = None,
    mask: Annotated[
        Optional[list[str]],
        typer.Option("--mask", help="FRAME:OBJ:PNG, a picture of the video's size; nonzero pixels are the object."),
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Also track back from the first prompt to frame 0.")] = False,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate of overlay.mp4.")] = 24.0,
) -> None:
    """Track objects through a video from clicks, boxes or masks; write per-frame masks and an overlay video."""
    from edgetam_export.runtime.track import VideoPrompt, track_video

    prompts = []
    for option, texts, counts, usage in (
        ("--point", point or [], (2, 3), "FRAME:OBJ:X,Y[,LABEL]"),
        ("--box", box or [], (4,), "FRAME:OBJ:X0,Y0,X1,Y1"),
    ):
        for text in texts:
            head, _, rest = text.partition(":")
            obj, numbers = _numbers(rest, option, counts, usage) if head.isdigit() else (None, [])
            if obj is None:
                raise EdgeTamExportError(f"{option} '{text}' is not {usage}")
            if option == "--box":
                prompts.append(VideoPrompt(int(head), obj, box=tuple(numbers)))
            else:
                label = int(numbers[2]) if len(numbers) == 3 else 1
                prompts.append(VideoPrompt(int(head), obj, point=(numbers[0], numbers[1]), label=label))

    for text in mask or []:
        frame, obj, path = (text.split(":", 2) + ["", ""])[:3]
        if not (frame.isdigit() and obj.isdigit() and path):
            raise EdgeTamExportError(f"--mask '{text}' is not FRAME:OBJ:PNG")
        prompts.append(VideoPrompt(int(frame), int(obj), mask=Path(path)))

    def report(frame: int, rate: float) -> None:
        if frame % 10 == 0:
            typer.echo(f"  frame {frame}  {rate:.2f} frames/s", err=True)

    summary = track_video(bundle, video, out, prompts, reverse, fps, report)
    typer.echo(
        f"tracked {len(summary['objects'])} objects over {summary['frames_tracked']} frames in {summary['seconds']} s "
        f"({summary['frames_per_second']} frames/s) -> {out}"
    )


bench_app = typer.Typer(help="Benchmark bundles (latency, FPS, FLOPs) and merge device runs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("run")
def bench_run(
    bundles: Annotated[list[Path], typer.Argument(help="Bundles of the same weights, benchmarked side by side.")],
    report: Annotated[Path, typer.Option("--report", help="Results JSON to write.")],
    markdown: Annotated[
        Optional[Path], typer.Option("--markdown", help="Also render a Markdown report (plots beside it).")
    ] = None,
    runs: Annotated[int, typer.Option("--runs", help="Timed runs per measurement (after 2 warm-up runs).")] = 10,
    video_frames: Annotated[int, typer.Option("--video-frames", help="Frames of videos/bedroom to track.")] = 16,
    objects: Annotated[str, typer.Option("--objects", help="Object counts for video FPS.")] = "1,2,4,8",
    data: DataOption = None,
) -> None:
    """Measure every stage, image mode and video FPS for the bundles and eager PyTorch, in one process."""
    from edgetam_export.bench import run_benchmarks, validate
    from edgetam_export.bench_report import write_report

    counts = tuple(int(n) for n in objects.split(",") if n.strip())
    results = run_benchmarks(bundles, data_dir=data, runs=runs, video_frames=video_frames, object_counts=counts)
    validate(results, "results.schema.json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(results, indent=1) + "\n")
    typer.echo(f"results written to {report}")
    if markdown:
        write_report(results, markdown)
        typer.echo(f"report written to {markdown}")


@bench_app.command("import")
def bench_import(
    device_run: Annotated[Path, typer.Argument(help="A device_run.schema.json file from the iOS demo or Android.")],
    report: Annotated[Path, typer.Option("--report", help="Results JSON to merge it into.")],
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Re-render this Markdown report.")] = None,
) -> None:
    """Validate a device benchmark run and merge it into a results file."""
    from edgetam_export.bench import merge_device_run
    from edgetam_export.bench_report import write_report

    results = merge_device_run(report, device_run)
    typer.echo(f"merged {device_run} into {report} ({len(results['device_runs'])} device runs)")
    if markdown:
        write_report(results, markdown)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback."""
    try:
        app()
    except EdgeTamExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
