"""`edgetam-export`: a thin Typer layer over the Python API (every command is a few lines over it)."""

from __future__ import annotations

import errno
import importlib.util
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.bundle import RANDOM_SOURCE
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.sample_data import SAMPLE_DATA_URL
from edgetam_export.stages.spec import CAPACITY_BOUNDS

app = typer.Typer(
    name="edgetam-export",
    help="Export EdgeTAM to ExecuTorch, Core ML and ONNX bundles, verify them against transformers, run them.",
    epilog="Start with: edgetam-export export --model random --size tiny --out models/try-me, then "
    "edgetam-export segment IMAGE --bundle models/try-me --point X,Y --out out/try-me. "
    "Each command's --help has examples.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


class ModelSizeChoice(str, Enum):
    """Architectures for --model random or a checkpoint."""

    full = "full"
    tiny = "tiny"


class CoreMLRuntimeChoice(str, Enum):
    """What runs a Core ML bundle in verify."""

    mil_interpreter = "mil-interpreter"
    cpu_only = "CPU_ONLY"
    cpu_and_gpu = "CPU_AND_GPU"
    cpu_and_ne = "CPU_AND_NE"
    all = "ALL"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"edgetam-export {version('edgetam-export')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Export EdgeTAM to ExecuTorch, Core ML and ONNX bundles, verify them against transformers, run them."""


def _examples(*lines: str) -> str:
    """A command's --help epilog: one example per line."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)

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
    ModelSizeChoice,
    typer.Option("--size", help="Architecture for --model random or a checkpoint: full (EdgeTAM) or tiny."),
]
DataOption = Annotated[
    Optional[Path],
    typer.Option("--data", help="Folder with images/ and videos/bedroom/ for parity inputs, as 'sample-data' writes it (default: "
                     "$EDGETAM_EXPORT_DATA, else ../shared/data, else synthetic pictures)."),
]


def _say(message: str) -> None:
    typer.echo(f"  {message}", err=True)


def _require_export_extra(command: str) -> None:
    """The export side (torch, transformers, the converters) is the [export] extra; the runtime is not."""
    missing = [name for name in ("torch", "transformers") if not _installed(name)]
    if missing:
        raise EdgeTamExportError(
            f"'{command}' needs the PyTorch reference ({' and '.join(missing)} not installed); install the export "
            "extra: pip install 'edgetam-export[export]'"
        )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked with sys.modules[name] = None
        return False


def _data_folder(data: Path | None) -> Path | None:
    """--data checked (or the default folder); when there is none, say at once that synthetic pictures stand in."""
    from edgetam_export.sample_data import check_data_dir, default_data_dir

    folder = check_data_dir(data) or default_data_dir()
    if folder is None:
        _say("no sample data (--data, $EDGETAM_EXPORT_DATA, ./data, ../shared/data): parity runs on synthetic pictures; "
             "'edgetam-export sample-data --out data' downloads the real ones")
    return folder


#: Most threads any runtime may be given (a typo of 100000 would otherwise start that many).
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


def _check_range(option: str, value: int, low: int, high: int, hint: str = "") -> None:
    if not low <= value <= high:
        raise EdgeTamExportError(f"{option} must be from {low} to {high}, got {value}{hint}")


def _check_report(path: Path | None, option: str) -> None:
    """Fail before a long run, not after it, when a report could not be written or would replace a user's file."""
    if path is not None:
        from edgetam_export.safe_output import check_report_target

        check_report_target(path, option)


@app.command(epilog=_examples(
    "edgetam-export export --model random --seed 0 --recipe executorch-xnnpack-fp32 --out models/edgetam-xnnpack",
    "edgetam-export export --model path/to/edgetam.pt --recipe coreml-fp16 --out models/edgetam-coreml",
    "edgetam-export export --model random --size tiny --recipe onnx-fp32 --out models/tiny-onnx --force",
))
def export(
    out: Annotated[
        Path,
        typer.Option("--out", help="Bundle folder to write: absent or empty, or an existing bundle with --force."),
    ] = Path("models/edgetam"),
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe name (see 'recipes') or a .toml file.")] = (
        "executorch-xnnpack-fp32"
    ),
    model: ModelOption = "random",
    seed: SeedOption = 0,
    size: SizeOption = ModelSizeChoice.full,
    max_objects: Annotated[Optional[int], typer.Option("--max-objects", help="Override the recipe.")] = None,
    point_slots: Annotated[Optional[int], typer.Option("--point-slots", help="Override the recipe.")] = None,
    memory_slots: Annotated[
        Optional[int], typer.Option("--memory-slots", help="Override the recipe (default: the model's 7 memories).")
    ] = None,
    pointer_slots: Annotated[
        Optional[int], typer.Option("--pointer-slots", help="Override the recipe (default: the model's 16 pointers).")
    ] = None,
    data: DataOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it holds a bundle (never any other folder).")
    ] = False,
) -> None:
    """Export the EdgeTAM stages under a recipe into a verified bundle."""
    from edgetam_export.recipes import load_recipe
    from edgetam_export.safe_output import BUNDLE, check_target

    chosen = load_recipe(recipe).with_shapes(
        max_objects=max_objects, point_slots=point_slots, memory_slots=memory_slots, pointer_slots=pointer_slots
    )
    check_target(out, BUNDLE, force)  # an --out that must not be replaced fails before any work
    data = _data_folder(data)
    _require_export_extra("export")
    from edgetam_export.backends import get_backend
    from edgetam_export.export import check_quantization, export_bundle
    from edgetam_export.reference import load_reference

    check_quantization(chosen, get_backend(chosen.backend))  # so do an unknown backend and a scheme it lacks
    typer.echo(f"loading reference '{model}'", err=True)
    reference = load_reference(model, seed=seed, size=size.value)
    typer.echo(f"exporting with recipe '{chosen.name}' to {out}", err=True)
    bundle = export_bundle(reference, chosen, out, data_dir=data, progress=_say, overwrite=force)
    summary = bundle.manifest.parity["summary"].values()
    worst = min(float(s["min_psnr_db"]) for s in summary)
    cosine = min(float(s.get("min_cosine", 1.0)) for s in summary)
    typer.echo(f"wrote {bundle.path} ({len(bundle.stage_names)} stages, parity passed, worst PSNR {worst:.1f} dB, "
               f"worst cosine {cosine:.5f})")
    for name, record in bundle.manifest.stages.items():
        if "quantization_fallback" in record.backend:
            typer.echo(f"  {name} stayed in {chosen.precision}: {record.backend['quantization_fallback']}")


@app.command(epilog=_examples(
    "edgetam-export verify models/edgetam-xnnpack --report parity.json",
    "edgetam-export verify models/edgetam-coreml --coreml-runtime CPU_AND_GPU   (macOS)",
))
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    report: Annotated[Optional[Path], typer.Option("--report", help="Write the parity report JSON here.")] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Reference weights (default: the source in the manifest).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed for --model random (default: the manifest's).")] = None,
    size: Annotated[
        Optional[ModelSizeChoice], typer.Option("--size", help="Architecture of --model (default: the manifest's).")
    ] = None,
    data: DataOption = None,
    coreml_runtime: Annotated[
        Optional[CoreMLRuntimeChoice],
        typer.Option("--coreml-runtime", help="Core ML bundles only: mil-interpreter (the Linux default) or the "
                     "compute units of the real runtime (macOS)."),
    ] = None,
) -> None:
    """Compare every stage of a bundle with the PyTorch reference; exit 1 on any failure."""
    from edgetam_export.bundle import read_bundle

    _say(f"verify: reading '{bundle}' and checking its checksums")
    opened = read_bundle(bundle)
    runs_core_ml = opened.backend == "coreml" or opened.manifest.recipe.delegate == "coreml"
    if coreml_runtime is not None and not runs_core_ml:
        raise EdgeTamExportError(
            f"--coreml-runtime applies to Core ML bundles; '{bundle}' is a bundle for {opened.backend}: drop the flag"
        )
    _check_report(report, "--report")
    source = opened.manifest.model
    if model is None and (seed is not None or size is not None):
        if source.source != RANDOM_SOURCE:
            raise EdgeTamExportError(
                f"--seed and --size choose random weights, but '{bundle}' was exported from '{source.source}'; pass "
                "--model random with them, or leave them out"
            )
        model = source.source
    _require_export_extra("verify")
    from edgetam_export.export import verify_bundle
    from edgetam_export.reference import load_reference

    _say("verify: loading PyTorch and the reference weights")
    data = _data_folder(data)
    reference = None
    if model:
        chosen_size = size.value if size else source.size or "full"
        chosen_seed = seed if seed is not None else source.seed or 0
        overrides = source.config_overrides if model == source.source else None  # a random variant's config
        reference = load_reference(model, seed=chosen_seed, size=chosen_size, config_overrides=overrides)
    result = verify_bundle(bundle, reference, data_dir=data, progress=_say,
                           coreml_runtime=coreml_runtime.value if coreml_runtime else None)
    typer.echo(f"runtime: {result.runtime}")
    typer.echo(result.table())
    for note in result.notes:
        typer.echo(f"note: {note}")
    if report:
        _check_report(report, "--report")  # nothing of the user's appeared there meanwhile
        result.write(report)
        typer.echo(f"report written to {report}")
    if not result.passed:
        typer.echo(f"FAILED: {len(result.failures)} outputs below the recipe's thresholds", err=True)
        for failure in result.failures:
            typer.echo(f"  {failure}", err=True)
        raise typer.Exit(1)
    typer.echo(f"passed: {len(result.results)} outputs ({result.thresholds.describe()})")


@app.command(epilog=_examples("edgetam-export info models/edgetam-xnnpack"))
def info(bundle: Annotated[Path, typer.Argument(help="Bundle folder.")]) -> None:
    """Show a bundle's model, recipe, stages (inputs, outputs, sizes) and parity; check every artifact's I/O."""
    from edgetam_export.bundle import read_bundle
    from edgetam_export.runtime.runners import check_artifacts

    opened = read_bundle(bundle)
    manifest = opened.manifest
    recipe = manifest.recipe
    typer.echo(f"bundle   {opened.path}  (format {manifest.format_version}, created {manifest.created})")
    typer.echo(f"model    {manifest.model.source} size={manifest.model.size} weights={manifest.model.weights_sha256[:12]}")
    typer.echo(f"recipe   {recipe.name}: {recipe.backend} {recipe.delegate or ''} {recipe.precision}")
    for name, record in manifest.stages.items():
        typer.echo(f"stage    {name}: {record.artifact} {record.size_bytes / 1e6:.1f} MB sha256={record.sha256[:12]}")
        for tensor in record.spec.inputs:
            typer.echo(f"    in   {tensor.name:<22} {tensor.dtype:<8} {list(tensor.shape)}")
        for tensor in record.spec.outputs:
            typer.echo(f"    out  {tensor.name:<22} {tensor.dtype:<8} {list(tensor.shape)}")
    checked = check_artifacts(opened)
    typer.echo(f"artifacts {checked}")
    notice = manifest.model.random_weights_notice()
    if notice:
        typer.echo(f"warning  {notice}")
    if manifest.parity:
        pictures = manifest.parity.get("pictures", "sample data")
        typer.echo(f"parity   {'passed' if manifest.parity['passed'] else 'FAILED'} ({manifest.parity['runtime']}; "
                   f"inputs: {pictures})")
        for stage, entry in manifest.parity["summary"].items():
            facts = manifest.stages[stage].backend if stage in manifest.stages else {}
            scheme = facts.get("quantization")
            if scheme and facts.get("quantized_modules"):
                scheme += " of " + ", ".join(facts["quantized_modules"])
            typer.echo(f"    {stage:<20} min PSNR {float(entry['min_psnr_db']):.1f} dB, "
                       f"min cosine {float(entry.get('min_cosine', 1.0)):.5f}, max-abs {float(entry['max_abs']):.3g}"
                       + (f", {scheme}" if scheme else ""))
        if "tracking" in manifest.parity:
            t = manifest.parity["tracking"]
            typer.echo(f"    tracking gate: {t['objects']} objects x {t['frames']} frames, mean IoU {t['mean_iou']:.4f}, "
                       f"min IoU {t['min_iou']:.4f}, presence agreement {t['presence_agreement']:.1%}")


@app.command("copy-bundle", epilog=_examples(
    "edgetam-export copy-bundle models/edgetam-coreml ios_demo/EdgeTAMDemo/Bundle",
    "edgetam-export copy-bundle models/edgetam-coreml-int8 ios_demo/EdgeTAMDemo/Bundle --force",
))
def copy_bundle_command(
    source: Annotated[Path, typer.Argument(help="Exported bundle folder (its checksums are verified).")],
    dest: Annotated[Path, typer.Argument(help="Where the copy goes, e.g. ios_demo/EdgeTAMDemo/Bundle.")],
    force: Annotated[bool, typer.Option("--force", help="Replace DEST if it holds a bundle (never any other folder).")] = False,
    any_backend: Annotated[
        bool, typer.Option("--any-backend", help="Also copy ONNX bundles (the iOS demo runs Core ML and ExecuTorch ones).")
    ] = False,
) -> None:
    """Copy a verified bundle into the iOS demo app (or anywhere), whole or not at all."""
    from edgetam_export.bundle import APP_BACKENDS, copy_bundle

    copied = copy_bundle(source, dest, overwrite=force, backends=None if any_backend else APP_BACKENDS)
    size = sum(record.size_bytes for record in copied.manifest.stages.values()) / 1e6
    typer.echo(f"copied {copied.manifest.recipe.name} ({len(copied.stage_names)} stages, {size:.1f} MB, checksums "
               f"verified) to {copied.path}")


@app.command("sample-data", epilog=_examples(
    "edgetam-export sample-data --out data",
    "edgetam-export export --model random --size tiny --recipe onnx-fp32 --data data --out models/try-me",
))
def sample_data_command(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (absent or empty, or an earlier download).")] = Path(
        "data"),
    base_url: Annotated[str, typer.Option("--base-url", help="Where images/ and videos/bedroom/ are served.")] = (
        SAMPLE_DATA_URL),
) -> None:
    """Download the sample pictures and the 200-frame bedroom clip (14 MB) that --data, parity and benchmarks use."""
    from edgetam_export.sample_data import download_sample_data

    _say(f"sample-data: downloading 203 files from {base_url}")
    download_sample_data(out, base_url, progress=_say)
    typer.echo(f"wrote {out} (images/, videos/bedroom/, every file's sha256 checked); pass --data {out} or set "
               f"EDGETAM_EXPORT_DATA={out}")


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
    size: SizeOption = ModelSizeChoice.full,
) -> None:
    """Print the stage contracts (names, shapes, dtypes, meanings) as JSON."""
    _require_export_extra("stages")
    from transformers import EdgeTamVideoModel

    from edgetam_export.recipes import load_recipe
    from edgetam_export.reference import build_video_config
    from edgetam_export.stages.registry import STAGES

    with __import__("torch").device("meta"):
        model = EdgeTamVideoModel(build_video_config(size.value))
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
    if not all(math.isfinite(v) for v in numbers):
        raise EdgeTamExportError(f"{option} '{text}' has a value that is not a finite number")
    return index, numbers


def _label(numbers: list[float], option: str, text: str) -> int:
    """The optional third number of a click: exactly 1 (positive, the default) or 0 (negative)."""
    if len(numbers) < 3:
        return 1
    if numbers[2] not in (0.0, 1.0):
        raise EdgeTamExportError(f"{option} '{text}': the label must be 1 (positive) or 0 (negative), got {numbers[2]:g}")
    return int(numbers[2])


@app.command(epilog=_examples(
    "edgetam-export segment data/images/truck.jpg --bundle models/edgetam-xnnpack --point 500,375 --out out/truck   "
    "(data/: edgetam-export sample-data)",
    "edgetam-export segment IMAGE --bundle DIR --point 500,375 --point 450,300,0 --out out/refined   (0: negative)",
    "edgetam-export segment IMAGE --bundle DIR --box 75,275,1725,850 --box 425,600,700,875 --out out/boxes",
    "edgetam-export segment IMAGE --bundle DIR --auto --out out/everything",
))
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
        points.append(PointPrompt(obj or 0, numbers[0], numbers[1], _label(numbers, "--point", text)))
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

    result = segment_image(
        bundle, image, out, points, boxes, None if single_mask is None else not single_mask, automatic, _say
    )
    typer.echo(f"{result['objects']} objects, {len(result['masks'])} masks in {result['seconds']} s -> {out}")
    if auto and not result["objects"]:
        typer.echo("hint: no mask passed the filters; lower --pred-iou-thresh and --stability-thresh "
                   "(untrained or random weights score low) or raise --points-per-side", err=True)


@app.command(epilog=_examples(
    "edgetam-export track data/videos/bedroom --bundle models/edgetam-xnnpack --point 0:1:210,350 "
    "--box 30:2:500,150,800,450 --out out/bedroom",
    "edgetam-export track clip.mp4 --bundle DIR --mask 0:3:my_mask.png --reverse --out out/masked",
))
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
                label = _label(numbers, option, text)
                prompts.append(VideoPrompt(int(head), obj, point=(numbers[0], numbers[1]), label=label))

    for text in mask or []:
        frame, obj, path = (text.split(":", 2) + ["", ""])[:3]
        if not (frame.isdigit() and obj.isdigit() and path):
            raise EdgeTamExportError(f"--mask '{text}' is not FRAME:OBJ:PNG")
        prompts.append(VideoPrompt(int(frame), int(obj), mask=Path(path)))

    summary = track_video(bundle, video, out, prompts, reverse, fps, _say)
    typer.echo(
        f"tracked {len(summary['objects'])} objects over {summary['frames_tracked']} frames in {summary['seconds']} s "
        f"({summary['frames_per_second']} frames/s) -> {out}"
    )


bench_app = typer.Typer(help="Benchmark bundles (latency, FPS, FLOPs) and merge device runs.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("run", epilog=_examples(
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
    _check_range("--runs", runs, 1, 10_000)
    _check_range("--warmup", warmup, 0, 1_000)
    if video_frames < warmup + 2:
        raise EdgeTamExportError(
            f"--video-frames must be at least --warmup + 2 (got {video_frames}): the prompt frame, the warm-up frames "
            "and one timed frame"
        )
    if threads is not None:
        _check_range("--threads", threads, 1, MAX_THREADS, "; leave it out for one per core")
    _check_report(report, "--report")
    _check_report(markdown, "--markdown")
    for path in bundles:
        read_bundle(path, check_checksums=False)  # a missing bundle fails now, not after minutes
    _say(f"bench: loading PyTorch, {len(bundles)} bundle(s) and the reference weights")
    _require_export_extra("bench run")
    from edgetam_export.bench import run_benchmarks, validate
    from edgetam_export.bench_report import write_report
    from edgetam_export.safe_output import write_text_atomic
    data = _data_folder(data)
    results = run_benchmarks(bundles, data_dir=data, warmup=warmup, runs=runs, video_frames=video_frames,
                             object_counts=counts, threads=threads, progress=_say)
    validate(results, "results.schema.json")
    _check_report(report, "--report")
    _check_report(markdown, "--markdown")
    write_text_atomic(report, json.dumps(results, indent=1) + "\n")
    typer.echo(f"results written to {report}")
    if markdown:
        write_report(results, markdown)
        typer.echo(f"report written to {markdown}")


@bench_app.command("import", epilog=_examples(
    "edgetam-export bench import device.json --report out/bench.json --markdown out/BENCH.md",
))
def bench_import(
    device_run: Annotated[Path, typer.Argument(help="A device_run.schema.json file from the iOS demo or Android.")],
    report: Annotated[Path, typer.Option("--report", help="Results JSON to merge it into.")],
    markdown: Annotated[Optional[Path], typer.Option("--markdown", help="Re-render this Markdown report.")] = None,
) -> None:
    """Validate a device benchmark run and merge it into a results file."""
    _require_export_extra("bench import")
    from edgetam_export.bench import merge_device_run

    _check_report(report, "--report")
    _check_report(markdown, "--markdown")
    from edgetam_export.bench_report import write_report

    results = merge_device_run(report, device_run)
    typer.echo(f"merged {device_run} into {report} ({len(results['device_runs'])} device runs)")
    if markdown:
        write_report(results, markdown)


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback.

    SIGTERM ends the command like Ctrl-C, so partly written outputs are removed on the way out.
    """
    from edgetam_export.safe_output import terminate_on_sigterm

    terminate_on_sigterm()
    try:
        # Without standalone mode Typer returns the code of `typer.Exit(n)` (a failed check) and 130 for
        # Ctrl-C, instead of exiting: both must reach the shell.
        code = app(standalone_mode=False)
    except EdgeTamExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except _USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help, as a user expects
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        command = exc.ctx.command_path if exc.ctx else "edgetam-export"
        message = exc.format_message().replace("Value error, ", "").rstrip(".")
        typer.echo(f"error: {message}; see '{command} --help'", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _PATH_PROBLEMS:
            raise
        typer.echo(f"error: {exc.strerror} for '{exc.filename}'; {_PATH_PROBLEMS[exc.errno]}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except typer.Exit as exc:
        code = exc.exit_code
    if code == INTERRUPTED:
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


#: Operating-system errors that are the user's path or disk, not a bug, with the fix.
_PATH_PROBLEMS = {
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOSPC: "free some disk space or choose another folder",
    errno.EDQUOT: "free some disk space or choose another folder",
    errno.EACCES: "choose a path you may read and write",
    errno.EROFS: "choose a folder on a writable disk",
}

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


#: Typer's usage-error class (its own copy of click's), reached through the public BadParameter.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
