"""Benchmarks: latency per stage and runtime, image mode, video FPS per object count, FLOPs and efficiency.

Every number of one report comes from one process on one machine, so ratios (bundle vs eager
PyTorch vs ONNX Runtime) are fair. Results follow `benchmarks/schema/results.schema.json`; device
runs (the iOS demo, ExecuTorch's Android runners) follow `device_run.schema.json` and are merged
with `merge_device_run`.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from edgetam_export.bundle import Bundle, read_bundle, sha256_of
from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.export import reference_for_bundle, tool_versions
from edgetam_export.progress import Progress
from edgetam_export.safe_output import write_text_atomic
from edgetam_export.reference import Reference, build_video_processor
from edgetam_export.runtime.runners import load_runners
from edgetam_export.runtime.tracker import TRACKING_STAGES, EdgeTamTracker
from edgetam_export.samples import build_cases
from edgetam_export.stages.registry import STAGES, StageShapes

SCHEMA_VERSION = 1
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "schema"
EAGER = "eager-pytorch"


def machine() -> dict:
    """CPU model, cores, OS and thread count of this run."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "os": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }


def code_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if platform.system() == "Darwin" else peak / 1024, 1)


def time_calls(call: Callable[[], object], warmup: int, runs: int) -> dict:
    """Latency statistics (ms) of `runs` calls after `warmup` unmeasured ones."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000.0)
    return {
        "runs": runs,
        "p50_ms": round(float(np.percentile(samples, 50)), 3),
        "p90_ms": round(float(np.percentile(samples, 90)), 3),
        "mean_ms": round(float(np.mean(samples)), 3),
    }


def matmul_peak_gflops(size: int = 4096, runs: int = 5) -> float:
    """Measured fp32 matrix-multiply rate of this machine (best of `runs`), the efficiency yardstick."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_seconds(lambda: torch.mm(a, b)) for _ in range(runs))
    return round(2 * size**3 / best / 1e9, 1)


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def count_flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass, counted by PyTorch's FlopCounterMode (matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return int(counter.get_total_flops())


def _objects(inputs: dict[str, torch.Tensor], spec, count: int) -> dict[str, torch.Tensor]:
    """The inputs with the objects axis cut or tiled to `count` objects."""
    resized = {}
    for tensor in spec.inputs:
        value = inputs[tensor.name]
        if tensor.has_objects_axis():
            repeats = -(-count // value.shape[0])
            value = value.repeat(repeats, *([1] * (value.dim() - 1)))[:count]
        resized[tensor.name] = value
    return resized


def bench_stages(
    bundles: list[Bundle], reference: Reference, shapes: StageShapes, data_dir: Path | None, warmup: int, runs: int,
    objects: tuple[int, ...] = (1,), counter: Progress | None = None,
) -> tuple[list[dict], dict]:
    """Latency of every stage the bundles share, for eager PyTorch (transformers' own code) and every bundle,
    plus FLOPs."""
    cases = {}
    for case in build_cases(reference, shapes, data_dir):
        cases.setdefault(case.stage, case)  # the first (full) case of each stage
    model = reference.video_model
    rows, flops = [], {}
    names = [name for name in STAGES if all(name in bundle.stage_names for bundle in bundles)]
    runners = {bundle.path: load_runners(bundle, names) for bundle in bundles}
    for name in names:
        stage = STAGES[name]
        spec = stage.spec(shapes)
        wrapper = stage.build(model, shapes)
        for count in objects if spec.has_objects_axis() else (1,):
            inputs = _objects(cases[name].inputs, spec, count)
            flops[f"{name}/{count}"] = count_flops(wrapper, tuple(inputs[n] for n in spec.input_names))
            with torch.no_grad():
                timing = time_calls(lambda: stage.upstream(model, shapes, inputs), warmup, runs)
            rows.append({"stage": name, "objects": count, "runtime": EAGER} | timing)
            _advance(counter, f"{name} eager")
            arrays = {k: v.numpy() for k, v in inputs.items()}
            for bundle in bundles:
                runner = runners[bundle.path][name]
                timing = time_calls(lambda: runner.run(arrays), warmup, runs)
                rows.append({"stage": name, "objects": count, "runtime": runtime_name(bundle)} | timing)
                _advance(counter, f"{name} {runtime_name(bundle)}")
    return rows, flops


def _advance(counter: Progress | None, note: str) -> None:
    if counter is not None:
        counter.advance(note=note)


def runtime_name(bundle: Bundle) -> str:
    return bundle.manifest.recipe.name


def bench_image_mode(
    bundles: list[Bundle], reference: Reference, image: Image.Image, warmup: int, runs: int,
    counter: Progress | None = None,
) -> list:
    """Encoder once + one click decoded: transformers (processor + EdgeTamModel) and each bundle."""
    from edgetam_export.runtime import EdgeTamPredictor

    processor, model = reference.processor, reference.image_model
    inputs = processor(images=image, input_points=[[[[image.width / 2, image.height / 2]]]], input_labels=[[[1]]],
                       return_tensors="pt")
    with torch.no_grad():
        rows = [{"runtime": EAGER} | time_calls(lambda: model(**inputs), warmup, runs)]
    _advance(counter, "image mode eager")
    for bundle in bundles:
        predictor = EdgeTamPredictor(bundle, load_runners(bundle, ["image_encoder", "prompt_decoder"]))

        def segment() -> None:
            predictor.predict(predictor.set_image(image), points=[[(image.width / 2, image.height / 2)]])

        rows.append({"runtime": runtime_name(bundle)} | time_calls(segment, warmup, runs))
        _advance(counter, f"image mode {runtime_name(bundle)}")
    return rows


def object_clicks(count: int, width: int, height: int) -> list[tuple[float, float]]:
    """`count` clicks spread over a frame, one per object."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    return [
        ((i % columns + 0.5) * width / columns, (i // columns + 0.5) * height / rows) for i in range(count)
    ]


def bench_video(
    bundles: list[Bundle], reference: Reference, frames: list[Image.Image], object_counts: tuple[int, ...],
    include_reference: bool = True, counter: Progress | None = None,
) -> list[dict]:
    """Frames per second while propagating through `frames` with 1, 2, 4, 8 objects prompted on frame 0."""
    rows = []
    width, height = frames[0].size
    tracked = len(frames) - 1
    for count in object_counts:
        clicks = object_clicks(count, width, height)
        if include_reference:
            processor = build_video_processor(reference.image_size)
            session = processor.init_video_session(video=frames, inference_device="cpu")
            with torch.inference_mode():
                for obj, (x, y) in enumerate(clicks):
                    processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=obj,
                                                              input_points=[[[[x, y]]]], input_labels=[[[1]]])
                    reference.video_model(inference_session=session, frame_idx=0)
                started = time.perf_counter()
                for _ in reference.video_model.propagate_in_video_iterator(session, start_frame_idx=1):
                    pass
            elapsed = time.perf_counter() - started
            rows.append({"runtime": EAGER, "objects": count, "frames": tracked, "seconds": round(elapsed, 3),
                         "fps": round(tracked / elapsed, 4)})
            _advance(counter, f"video {count} objects eager")
        for bundle in bundles:
            tracker = EdgeTamTracker(bundle, load_runners(bundle, TRACKING_STAGES))
            session = tracker.init_session(frames)
            for obj, (x, y) in enumerate(clicks):
                session.add_prompt(0, obj, points=[(x, y)])
                session.run_frame(0)
            tracker.stage_seconds.clear()
            started = time.perf_counter()
            for _ in session.propagate(1):
                pass
            elapsed = time.perf_counter() - started
            rows.append({
                "runtime": runtime_name(bundle), "objects": count, "frames": tracked, "seconds": round(elapsed, 3),
                "fps": round(tracked / elapsed, 4),
                "stage_ms_per_frame": {k: round(v * 1000 / tracked, 2) for k, v in tracker.stage_seconds.items()},
            })
            _advance(counter, f"video {count} objects {runtime_name(bundle)}")
    return rows


def run_benchmarks(
    bundle_paths: list[Path],
    *,
    data_dir: Path | None,
    warmup: int = 2,
    runs: int = 10,
    video_frames: int = 20,
    object_counts: tuple[int, ...] = (1, 2, 4, 8),
    include_reference_video: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The standard matrix over some bundles of the same weights; returns the results document."""
    from edgetam_export.sample_data import default_data_dir
    from edgetam_export.samples import sample_pictures

    bundles = [read_bundle(path) for path in bundle_paths]
    if not bundles:
        raise EdgeTamExportError("give at least one bundle to benchmark")
    weights = {b.manifest.model.weights_sha256 for b in bundles}
    shapes_all = {b.manifest.shapes for b in bundles}
    if len(weights) != 1 or len(shapes_all) != 1:
        raise EdgeTamExportError("bundles benchmarked together must share weights and shapes (export them alike)")
    reference = reference_for_bundle(bundles[0])
    shapes = bundles[0].manifest.shapes
    data_dir = data_dir or default_data_dir()
    stills, _ = sample_pictures(data_dir)
    frames = _video_frames(data_dir, video_frames)
    runtimes = 1 + len(bundles)
    shared = [name for name in STAGES if all(name in bundle.stage_names for bundle in bundles)]
    counter = Progress("bench: measurement", runtimes * (len(shared) + 1 + len(object_counts)), progress, 0.0)
    peak = matmul_peak_gflops()
    stage_rows, flops = bench_stages(bundles, reference, shapes, data_dir, warmup, runs, counter=counter)
    for row in stage_rows:
        gflop = flops[f"{row['stage']}/{row['objects']}"] / 1e9
        row["gflop"] = round(gflop, 6)
        row["gflops_per_s"] = round(gflop / (row["p50_ms"] / 1000), 1)
        row["fraction_of_matmul_peak"] = round(row["gflops_per_s"] / peak, 3)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": code_commit(),
        "machine": machine() | {"fp32_matmul_gflops": peak},
        "tools": tool_versions(),
        "model": bundles[0].manifest.model.to_json(),
        "bundles": [
            {"runtime": runtime_name(b), "path": str(b.path), "backend": b.backend, "recipe": b.manifest.recipe.to_json(),
             "manifest_sha256": sha256_of(b.path / "manifest.json"),
             "artifacts": {s: {"sha256": r.sha256, "size_bytes": r.size_bytes,
                               "export_seconds": r.export_seconds} for s, r in b.manifest.stages.items()}}
            for b in bundles
        ],
        "settings": {"warmup": warmup, "runs": runs, "video_frames": len(frames), "object_counts": list(object_counts)},
        "stages": stage_rows,
        "image_mode": bench_image_mode(bundles, reference, stills[0], warmup, runs, counter),
        "video": bench_video(bundles, reference, frames, object_counts, include_reference_video, counter),
        "peak_rss_mb": peak_rss_mb(),
        "device_runs": [],
    }


def _video_frames(data_dir: Path | None, count: int) -> list[Image.Image]:
    from edgetam_export.samples import load_images

    if data_dir is None:
        from edgetam_export.samples import synthetic_image

        return [synthetic_image(seed=i) for i in range(count)]
    paths = sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:count]
    return load_images(paths)


def validate(document: dict, schema_name: str) -> None:
    """Check a results or device-run document against its JSON schema; one line per problem."""
    import jsonschema

    schema = json.loads((SCHEMA_DIR / schema_name).read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(document), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "(top level)"
        raise EdgeTamExportError(f"{schema_name}: {where}: {first.message} ({len(errors)} problems)")


def merge_device_run(results_path: Path, device_run_path: Path) -> dict:
    """Add a device run (from the iOS demo or an Android runner) to a results file, after validation."""
    documents = []
    for path, what in ((device_run_path, "device run"), (results_path, "--report results file")):
        if not Path(path).is_file():
            raise EdgeTamExportError(f"{what} '{path}' does not exist; give the JSON file written by the app or 'bench run'")
        try:
            documents.append(json.loads(Path(path).read_text()))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EdgeTamExportError(f"cannot read {what} '{path}' ({short_reason(exc)}); is it a JSON file?") from None
    run, results = documents
    validate(run, "device_run.schema.json")
    validate(results, "results.schema.json")
    results["device_runs"].append(run)
    write_text_atomic(Path(results_path), json.dumps(results, indent=1) + "\n")
    return results
