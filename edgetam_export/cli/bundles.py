"""Commands over bundles: export, verify, info, copy-bundle, sample-data, recipes, stages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.bundle import RANDOM_SOURCE
from edgetam_export.cli.app import (
    CoreMLRuntimeChoice,
    DataOption,
    ModelOption,
    ModelSizeChoice,
    SeedOption,
    SizeOption,
    app,
    check_report,
    data_folder,
    examples,
    require_export_extra,
    say,
)
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.verification.sample_data import SAMPLE_DATA_URL


@app.command(epilog=examples(
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
    gate_frames: Annotated[Optional[int], typer.Option(
        "--gate-frames", help="Frames of the recipe's tracking gate (default: the recipe's; recorded in the manifest)."
    )] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out if it holds a bundle (never any other folder).")
    ] = False,
) -> None:
    """Export the EdgeTAM stages under a recipe into a verified bundle."""
    from edgetam_export.recipes import load_recipe
    from edgetam_export.safe_output import BUNDLE, check_target

    chosen = load_recipe(recipe).with_shapes(
        max_objects=max_objects, point_slots=point_slots, memory_slots=memory_slots, pointer_slots=pointer_slots
    ).with_gate_frames(gate_frames)
    check_target(out, BUNDLE, force)  # an --out that must not be replaced fails before any work
    data = data_folder(data)
    require_export_extra("export")
    from edgetam_export.backends import get_backend
    from edgetam_export.export import check_quantization, export_bundle
    from edgetam_export.reference import load_reference

    check_quantization(chosen, get_backend(chosen.backend))  # so do an unknown backend and a scheme it lacks
    typer.echo(f"loading reference '{model}'", err=True)
    reference = load_reference(model, seed=seed, size=size.value)
    typer.echo(f"exporting with recipe '{chosen.name}' to {out}", err=True)
    bundle = export_bundle(reference, chosen, out, data_dir=data, progress=say, overwrite=force)
    summary = bundle.manifest.parity["summary"].values()
    worst = min(float(s["min_psnr_db"]) for s in summary)
    cosine = min(float(s.get("min_cosine", 1.0)) for s in summary)
    typer.echo(f"wrote {bundle.path} ({len(bundle.stage_names)} stages, parity passed, worst PSNR {worst:.1f} dB, "
               f"worst cosine {cosine:.5f})")
    for name, record in bundle.manifest.stages.items():
        if "quantization_fallback" in record.backend:
            typer.echo(f"  {name} stayed in {chosen.precision}: {record.backend['quantization_fallback']}")


@app.command(epilog=examples(
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

    say(f"verify: reading '{bundle}' and checking its checksums")
    opened = read_bundle(bundle)
    runs_core_ml = opened.backend == "coreml" or opened.manifest.recipe.delegate == "coreml"
    if coreml_runtime is not None and not runs_core_ml:
        raise EdgeTamExportError(
            f"--coreml-runtime applies to Core ML bundles; '{bundle}' is a bundle for {opened.backend}: drop the flag"
        )
    check_report(report, "--report")
    source = opened.manifest.model
    if model is None and (seed is not None or size is not None):
        if source.source != RANDOM_SOURCE:
            raise EdgeTamExportError(
                f"--seed and --size choose random weights, but '{bundle}' was exported from '{source.source}'; pass "
                "--model random with them, or leave them out"
            )
        model = source.source
    require_export_extra("verify")
    from edgetam_export.export import verify_bundle
    from edgetam_export.reference import load_reference

    say("verify: loading PyTorch and the reference weights")
    data = data_folder(data)
    reference = None
    if model:
        chosen_size = size.value if size else source.size or "full"
        chosen_seed = seed if seed is not None else source.seed or 0
        overrides = source.config_overrides if model == source.source else None  # a random variant's config
        reference = load_reference(model, seed=chosen_seed, size=chosen_size, config_overrides=overrides)
    result = verify_bundle(bundle, reference, data_dir=data, progress=say,
                           coreml_runtime=coreml_runtime.value if coreml_runtime else None)
    typer.echo(f"runtime: {result.runtime}")
    typer.echo(result.table())
    for note in result.notes:
        typer.echo(f"note: {note}")
    if report:
        check_report(report, "--report")  # nothing of the user's appeared there meanwhile
        result.write(report)
        typer.echo(f"report written to {report}")
    if not result.passed:
        typer.echo(f"FAILED: {len(result.failures)} outputs below the recipe's thresholds", err=True)
        for failure in result.failures:
            typer.echo(f"  {failure}", err=True)
        raise typer.Exit(1)
    typer.echo(f"passed: {len(result.results)} outputs ({result.thresholds.describe()})")


@app.command(epilog=examples("edgetam-export info models/edgetam-xnnpack"))
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


@app.command("copy-bundle", epilog=examples(
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


@app.command("sample-data", epilog=examples(
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
    from edgetam_export.verification.sample_data import download_sample_data

    say(f"sample-data: downloading 203 files from {base_url}")
    download_sample_data(out, base_url, progress=say)
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
    require_export_extra("stages")
    from transformers import EdgeTamVideoModel

    from edgetam_export.recipes import load_recipe
    from edgetam_export.reference import build_video_config
    from edgetam_export.stages.registry import STAGES, stage_shapes

    with __import__("torch").device("meta"):
        model = EdgeTamVideoModel(build_video_config(size.value))
    shapes = stage_shapes(model, load_recipe(recipe).shapes)
    typer.echo(json.dumps({name: stage.spec(shapes).to_json() for name, stage in STAGES.items()}, indent=2))
