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
from collections.abc import Callable, Iterator
from functools import partial
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from edgetam_export.bundle import Bundle, read_bundle, sha256_of
from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.export import reference_for_bundle, tool_versions
from edgetam_export.benchmarking.fp32_peak import measure_fp32_peak
from edgetam_export.progress import Progress
from edgetam_export.safe_output import REPORT_MARKER, write_text_atomic
from edgetam_export.verification.sample_data import bedroom_frames
from edgetam_export.reference import Reference, build_video_processor
from edgetam_export.runtime.runners import StageRunner, load_runners
from edgetam_export.runtime.tracker import TRACKING_STAGES, EdgeTamTracker
from edgetam_export.verification.samples import StageCase, build_cases
from edgetam_export.stages.registry import STAGES, StageShapes
from edgetam_export.stages.spec import EMPTY_SLOT_LABEL, PADDING_POINT_LABEL

SCHEMA_VERSION = 2
SCHEMA_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "schema"
EAGER = "eager-pytorch"
#: What a bundle artifact record carries about reduced precision (from the manifest's backend facts).
QUANTIZATION_FACTS = ("quantization", "quantized_modules", "quantization_fallback")


def machine() -> dict:
    """CPU model, cores and OS of this run."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": os.cpu_count(), "os": platform.platform()}


def set_threads(threads: int, bundles: list[Bundle]) -> dict:
    """Give every runtime of the run `threads` threads; return the counts each runtime reports.

    torch (eager) and ONNX Runtime (intra-op, per session: passed to every ONNX runner loaded for the run)
    take the count directly; ExecuTorch's XNNPACK kernels run on one process-wide threadpool, resized here.
    """
    torch.set_num_threads(threads)
    counts = {"torch": torch.get_num_threads()}
    if any(b.backend == "onnx" for b in bundles):
        counts["onnxruntime_intra_op"] = threads
    if any(b.backend == "executorch" for b in bundles):
        from edgetam_export.runtime.runners.executorch import set_threadpool_size

        counts["executorch_threadpool"] = set_threadpool_size(threads)
    return counts


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


#: Untimed pause after each timed call, so the worker threads of one runtime (ONNX Runtime and XNNPACK spin
#: before they sleep) have stopped before the next runtime starts. Measured here without it: eager decoding
#: slowed from 57-70 ms to 95 ms when timed right after ONNX Runtime.
SETTLE_SECONDS = 0.1


def time_in_turns(calls: dict[str, Callable[[], object]], warmup: int, runs: int,
                  settle: float = SETTLE_SECONDS) -> dict[str, dict]:
    """Latency statistics (ms) of each call, measured in turns: run i of every call before run i + 1 of any.

    A shared machine speeds up and slows down while a benchmark runs (measured here: the same XNNPACK
    stage at 171 and 399 ms a minute apart); timed in turns, every runtime meets the same conditions,
    so the ratios between them hold even when the absolute figures drift."""
    for _ in range(warmup):
        for call in calls.values():
            call()
            time.sleep(settle)
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(runs):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - started) * 1000.0)
            time.sleep(settle)
    return {name: _statistics(values) for name, values in samples.items()}


def _statistics(samples: list[float]) -> dict:
    return {
        "runs": len(samples),
        "p50_ms": round(float(np.percentile(samples, 50)), 3),
        "p90_ms": round(float(np.percentile(samples, 90)), 3),
        "mean_ms": round(float(np.mean(samples)), 3),
    }


def _without_grad(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return call()

    return run


def count_flops(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    """FLOPs of one forward pass, counted by PyTorch's FlopCounterMode (matmuls and convolutions)."""
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        module(*inputs)
    return int(counter.get_total_flops())


def inputs_for_objects(inputs: dict[str, torch.Tensor], spec, count: int) -> dict[str, torch.Tensor]:
    """The inputs with the objects axis cut or tiled to `count` objects."""
    resized = {}
    for tensor in spec.inputs:
        value = inputs[tensor.name]
        if tensor.has_objects_axis():
            repeats = -(-count // value.shape[0])
            value = value.repeat(repeats, *([1] * (value.dim() - 1)))[:count]
        resized[tensor.name] = value
    return resized


def largest_cases(cases: list[StageCase]) -> dict[str, StageCase]:
    """The case of each stage with the most input data (non-zero values; stage inputs have fixed capacity):
    the full memory bank for memory attention, all objects for the decoder. Timing the first case instead
    would time a 2-slot bank against the FLOPs of a full one."""
    chosen: dict[str, StageCase] = {}

    def data(case: StageCase) -> int:
        return sum(int(torch.count_nonzero(t)) for t in case.inputs.values())

    for case in cases:
        if case.stage not in chosen or data(case) > data(chosen[case.stage]):
            chosen[case.stage] = case
    return chosen


def eager_baseline(reference: Reference, shapes: StageShapes, stage: str, inputs: dict[str, torch.Tensor]
                   ) -> tuple[Callable[[], object], str]:
    """The eager call that does the stage's work the way transformers does it, and what it is.

    The decoder's parity upstream decodes every object twice (single- and multimask output, for
    comparison); transformers decodes a click once, all objects as one point batch of `EdgeTamModel`,
    and that is the call timed. Other stages' upstreams are transformers' own modules called once.
    """
    if stage == "prompt_decoder":
        labels = inputs["point_labels"].long().clone()
        labels[labels == EMPTY_SLOT_LABEL] = PADDING_POINT_LABEL
        embeddings = [inputs["high_res_features_0"], inputs["high_res_features_1"], inputs["image_embeddings"][:1]]

        def decode() -> object:
            return reference.image_model(image_embeddings=embeddings, input_points=inputs["point_coords"][None],
                                         input_labels=labels[None], multimask_output=True)

        return decode, "EdgeTamModel(image_embeddings=..., input_points=...): one call, objects as point batch"
    upstream = STAGES[stage].upstream
    return (lambda: upstream(reference.video_model, shapes, inputs)), f"transformers modules of {stage}, one call"


def bench_stages(
    bundles: list[Bundle], runners: dict[Path, dict[str, StageRunner]], reference: Reference, shapes: StageShapes,
    data_dir: Path | None, warmup: int, runs: int, objects: tuple[int, ...] = (1,), counter: Progress | None = None,
) -> tuple[list[dict], dict]:
    """Latency of every stage the bundles share on its largest case, for eager PyTorch (transformers' own
    code, see `eager_baseline`) and every bundle, plus FLOPs. Every row names its case."""
    cases = largest_cases(build_cases(reference, shapes, data_dir))
    rows, flops = [], {}
    names = [name for name in STAGES if all(name in bundle.stage_names for bundle in bundles)]
    for name in names:
        stage = STAGES[name]
        spec = stage.spec(shapes)
        wrapper = stage.build(reference.video_model, shapes)
        for count in objects if spec.has_objects_axis() else (1,):
            inputs = inputs_for_objects(cases[name].inputs, spec, count)
            case = f"{cases[name].label}; timed with {count} object{'s' * (count > 1)}" if spec.has_objects_axis() \
                else cases[name].label
            flops[f"{name}/{count}"] = count_flops(wrapper, tuple(inputs[n] for n in spec.input_names))
            call, baseline = eager_baseline(reference, shapes, name, inputs)
            arrays = {k: v.numpy() for k, v in inputs.items()}
            calls = {EAGER: _without_grad(call)} | {
                runtime_name(b): partial(runners[b.path][name].run, arrays) for b in bundles
            }
            for runtime, timing in time_in_turns(calls, warmup, runs).items():
                rows.append({"stage": name, "objects": count, "case": case, "runtime": runtime}
                            | ({"baseline": baseline} if runtime == EAGER else {}) | timing)
            _advance(counter, f"{name} ({count} object{'s' * (count > 1)})")
    return rows, flops


def _advance(counter: Progress | None, note: str) -> None:
    if counter is not None:
        counter.advance(note=note)


def runtime_name(bundle: Bundle) -> str:
    return bundle.manifest.recipe.name


def bench_image_mode(
    bundles: list[Bundle], runners: dict[Path, dict[str, StageRunner]], reference: Reference, image: Image.Image,
    warmup: int, runs: int, counter: Progress | None = None,
) -> list:
    """One picture in, one click's masks at the picture's size out, everything in between timed: for
    transformers the processor, `EdgeTamModel` and `post_process_masks`; for a bundle the predictor's
    preprocessing, both stages and its mask upsampling."""
    from edgetam_export.runtime import EdgeTamPredictor

    processor, model = reference.processor, reference.image_model
    click = (image.width / 2, image.height / 2)

    def transformers_segment() -> None:
        inputs = processor(images=image, input_points=[[[list(click)]]], input_labels=[[[1]]], return_tensors="pt")
        outputs = model(**inputs)
        processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])

    calls = {EAGER: _without_grad(transformers_segment)}
    for bundle in bundles:
        predictor = EdgeTamPredictor(bundle, {k: runners[bundle.path][k] for k in ("image_encoder", "prompt_decoder")})
        calls[runtime_name(bundle)] = partial(_segment, predictor, image, click)
    rows = [{"runtime": runtime} | timing for runtime, timing in time_in_turns(calls, warmup, runs).items()]
    _advance(counter, "image mode")
    return rows


def _segment(predictor, image: Image.Image, click: tuple[float, float]) -> None:
    predictor.predict(predictor.set_image(image), points=[[click]])


def object_clicks(count: int, width: int, height: int) -> list[tuple[float, float]]:
    """`count` clicks spread over a frame, one per object."""
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    return [
        ((i % columns + 0.5) * width / columns, (i // columns + 0.5) * height / rows) for i in range(count)
    ]


def bench_video(
    bundles: list[Bundle], runners: dict[Path, dict[str, StageRunner]], reference: Reference,
    frames: list[Image.Image], object_counts: tuple[int, ...], warmup: int, include_reference: bool = True,
    counter: Progress | None = None,
) -> list[dict]:
    """Frames per second while propagating through `frames` with 1, 2, 4, 8 objects clicked on frame 0.

    Every runtime prompts frame 0, then the runtimes track in turns, one frame each (as `time_in_turns`
    does for stages); the first `warmup` tracked frames are left out of the timing on every side alike."""
    rows = []
    width, height = frames[0].size
    timed = len(frames) - 1 - warmup
    if timed < 1:
        raise EdgeTamExportError(f"video benchmark needs more than {warmup + 1} frames (warm-up {warmup} + prompt)")
    for count in object_counts:
        clicks = object_clicks(count, width, height)
        sessions: dict[str, Iterator[object]] = {}
        if include_reference:
            sessions[EAGER] = _transformers_tracking(reference, frames, clicks)
        trackers = {}
        for bundle in bundles:
            tracker = EdgeTamTracker(bundle, {k: runners[bundle.path][k] for k in TRACKING_STAGES})
            session = tracker.init_session(frames)
            for obj, (x, y) in enumerate(clicks):
                session.add_prompt(0, obj, points=[(x, y)])
                session.run_frame(0)
            trackers[runtime_name(bundle)] = tracker
            sessions[runtime_name(bundle)] = session.propagate(1)
        seconds = dict.fromkeys(sessions, 0.0)
        for frame in range(len(frames) - 1):
            if frame == warmup:
                for tracker in trackers.values():
                    tracker.stages.seconds.clear()
            for runtime, frames_of_runtime in sessions.items():
                started = time.perf_counter()
                next(frames_of_runtime)
                if frame >= warmup:
                    seconds[runtime] += time.perf_counter() - started
                time.sleep(SETTLE_SECONDS)
        for runtime, elapsed in seconds.items():
            row = {"runtime": runtime, "objects": count, "frames": timed, "seconds": round(elapsed, 3),
                   "fps": round(timed / elapsed, 4)}
            if runtime in trackers:
                row["stage_ms_per_frame"] = {k: round(v * 1000 / timed, 2) for k, v in trackers[runtime].stages.seconds.items()}
            rows.append(row)
        _advance(counter, f"video {count} object{'s' * (count > 1)}")
    return rows


def _transformers_tracking(reference: Reference, frames: list[Image.Image], clicks: list[tuple[float, float]]
                           ) -> Iterator[object]:
    """transformers' video model: the clicks on frame 0, then its frames one by one (inference mode throughout)."""
    processor = build_video_processor(reference.image_size)
    session = processor.init_video_session(video=frames, inference_device="cpu")
    with torch.inference_mode():
        for obj, (x, y) in enumerate(clicks):
            processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=obj,
                                                      input_points=[[[[x, y]]]], input_labels=[[[1]]])
            reference.video_model(inference_session=session, frame_idx=0)
        yield from reference.video_model.propagate_in_video_iterator(session, start_frame_idx=1)


def run_benchmarks(
    bundle_paths: list[Path],
    *,
    data_dir: Path | None,
    warmup: int = 2,
    runs: int = 10,
    video_frames: int = 20,
    object_counts: tuple[int, ...] = (1, 2, 4, 8),
    include_reference_video: bool = True,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """The standard matrix over some bundles of the same weights; returns the results document.

    Every runtime gets `threads` threads (default: one per core) and the same warm-up; efficiency is
    measured against the machine's fp32 peak (`fp32_peak`), measured in the same process."""
    from edgetam_export.verification.sample_data import default_data_dir
    from edgetam_export.verification.samples import sample_pictures

    bundles = [read_bundle(path) for path in bundle_paths]
    if not bundles:
        raise EdgeTamExportError("give at least one bundle to benchmark")
    weights = {b.manifest.model.weights_sha256 for b in bundles}
    shapes_all = {b.manifest.shapes for b in bundles}
    if len(weights) != 1 or len(shapes_all) != 1:
        raise EdgeTamExportError("bundles benchmarked together must share weights and shapes (export them alike)")
    threads = threads or os.cpu_count() or 1
    thread_counts = set_threads(threads, bundles)
    say = progress or (lambda message: None)
    say("bench: rebuilding the reference weights from the manifest")
    reference = reference_for_bundle(bundles[0])
    shapes = bundles[0].manifest.shapes
    data_dir = data_dir or default_data_dir()
    stills, _ = sample_pictures(data_dir)
    frames = _video_frames(data_dir, video_frames)
    say(f"bench: loading {len(bundles)} bundle(s)")
    shared = [name for name in STAGES if all(name in bundle.stage_names for bundle in bundles)]
    runners = {b.path: load_runners(b, sorted(set(shared) | set(TRACKING_STAGES)), threads=threads) for b in bundles}
    counter = Progress("bench: measurement", len(shared) + 1 + len(object_counts), progress, 0.0)
    say(f"bench: measuring this machine's fp32 peak on {threads} threads")
    peak = measure_fp32_peak(threads)
    stage_rows, flops = bench_stages(bundles, runners, reference, shapes, data_dir, warmup, runs, counter=counter)
    for row in stage_rows:
        gflop = flops[f"{row['stage']}/{row['objects']}"] / 1e9
        row["gflop"] = round(gflop, 6)
        row["gflops_per_s"] = round(gflop / (row["p50_ms"] / 1000), 1)
        row["fraction_of_peak"] = round(row["gflops_per_s"] / peak.gflops, 3)
    return {
        REPORT_MARKER: "edgetam-export bench",
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": code_commit(),
        "machine": machine() | {"fp32_peak": peak.to_json()},
        "threads": thread_counts,
        "tools": tool_versions(),
        "model": bundles[0].manifest.model.to_json(),
        "bundles": [
            {"runtime": runtime_name(b), "path": str(b.path), "backend": b.backend, "recipe": b.manifest.recipe.to_json(),
             "manifest_sha256": sha256_of(b.path / "manifest.json"), "exported": b.manifest.created,
             "artifacts": {s: {"sha256": r.sha256, "size_bytes": r.size_bytes, "export_seconds": r.export_seconds}
                           | {k: r.backend[k] for k in QUANTIZATION_FACTS if k in r.backend}
                           for s, r in b.manifest.stages.items()},
             "parity": b.manifest.parity}
            for b in bundles
        ],
        "settings": {"warmup": warmup, "runs": runs, "video_frames": len(frames), "object_counts": list(object_counts),
                     "threads": threads},
        "stages": stage_rows,
        "image_mode": bench_image_mode(bundles, runners, reference, stills[0], warmup, runs, counter),
        "video": bench_video(bundles, runners, reference, frames, object_counts, warmup, include_reference_video,
                             counter),
        "peak_rss_mb": peak_rss_mb(),
        "device_runs": [],
    }


def _video_frames(data_dir: Path | None, count: int) -> list[Image.Image]:
    from edgetam_export.verification.samples import load_images

    if data_dir is None:
        from edgetam_export.verification.samples import synthetic_image

        return [synthetic_image(seed=i) for i in range(count)]
    paths = bedroom_frames(data_dir)[:count]
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
