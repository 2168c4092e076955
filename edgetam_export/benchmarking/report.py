"""Render a benchmark results document as benchmarks/REPORT.md with PNG plots, and judge the targets."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from edgetam_export.benchmarking.bench import EAGER, SETTLE_SECONDS
from edgetam_export.safe_output import MARKDOWN_MARKER, write_text_atomic

ONNX_RUNTIME = "onnx-fp32"


def _stage_table(results: dict) -> tuple[list[str], dict]:
    rows = [r for r in results["stages"] if r["objects"] == 1]
    by_stage: dict[str, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        by_stage[row["stage"]][row["runtime"]] = row
    lines = [
        "| stage | runtime | p50 ms | p90 ms | vs eager | vs ONNX Runtime | GFLOP | GFLOP/s | % of fp32 peak |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    # An int8 or bf16 stage does other arithmetic than the fp32 FMAs the peak counts: no share of that peak for it.
    quantized = {(b["runtime"], stage): scheme for b in results.get("bundles", [])
                 for stage, scheme in reduced_schemes(b).items()}
    for stage, runtimes in by_stage.items():
        eager = runtimes.get(EAGER, {}).get("p50_ms")
        ort = runtimes.get(ONNX_RUNTIME, {}).get("p50_ms")
        for runtime, row in runtimes.items():
            versus_eager = f"{eager / row['p50_ms']:.2f}x" if eager else "-"
            versus_ort = f"{ort / row['p50_ms']:.2f}x" if ort else "-"
            scheme = quantized.get((runtime, stage))
            share = f"- ({scheme})" if scheme else _percent_of_peak(row["fraction_of_peak"])
            lines.append(
                f"| {stage} | {runtime} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} | {versus_eager} | {versus_ort} | "
                f"{row['gflop']:.2f} | {row['gflops_per_s']:.0f} | {share} |"
            )
    lines += ["", "Cases timed (the same inputs for every runtime):", ""]
    for stage, runtimes in by_stage.items():
        eager = runtimes.get(EAGER, {})
        baseline = f"; eager baseline: {eager['baseline']}" if "baseline" in eager else ""
        lines.append(f"- {stage}: {next(iter(runtimes.values()))['case']}{baseline}")
    return lines, by_stage


def reduced_schemes(bundle: dict) -> dict[str, str]:
    """Stage -> the reduced arithmetic it runs in: its int8 scheme, or the recipe's precision where not fp32."""
    precision = bundle["recipe"].get("precision", "fp32")
    return {stage: artifact.get("quantization") or precision for stage, artifact in bundle.get("artifacts", {}).items()
            if artifact.get("quantization") or precision != "fp32"}


def is_reduced(bundle: dict) -> bool:
    """Whether a bundle's recipe asks for anything but fp32 arithmetic (int8 schemes, bf16, fp16)."""
    return bool(bundle["recipe"].get("quantization")) or bundle["recipe"].get("precision", "fp32") != "fp32"


def _percent_of_peak(fraction: float) -> str:
    """A share of the fp32 peak; above 100% the yardstick is wrong, and the cell says so."""
    return f"{100 * fraction:.0f}%" + (" (above the measured peak: yardstick invalid)" if fraction > 1 else "")


def verdict(met: bool, fraction: float | None = None) -> str:
    """'met' or 'missed'; a target judged on a share of the peak above 100% is invalid, never met."""
    if fraction is not None and fraction > 1:
        return "**invalid: above the measured fp32 peak**"
    return "**met**" if met else "**missed**"


def _video_tables(results: dict) -> tuple[list[str], dict]:
    fps: dict[str, dict[int, dict]] = defaultdict(dict)
    for row in results["video"]:
        fps[row["runtime"]][row["objects"]] = row
    counts = sorted({row["objects"] for row in results["video"]})
    lines = ["| runtime | " + " | ".join(f"{n} object{'s' * (n > 1)} FPS" for n in counts) + " |",
             "| --- | " + " | ".join("---:" for _ in counts) + " |"]
    for runtime, by_count in fps.items():
        cells = []
        for n in counts:
            row = by_count.get(n)
            eager = fps.get(EAGER, {}).get(n)
            ratio = f" ({row['fps'] / eager['fps']:.1f}x)" if row and eager and runtime != EAGER else ""
            cells.append(f"{row['fps']:.2f}{ratio}" if row else "-")
        lines.append(f"| {runtime} | " + " | ".join(cells) + " |")
    return lines, fps


def _host_cells(row: dict) -> str:
    """'runner ms | host ms (share)' of a device-run video row (n/a for runs that do not split the frame)."""
    host = row.get("host_ms_per_frame")
    if host is None:
        return "n/a | n/a"
    return f"{row['runner_ms_per_frame']:.1f} | {host:.1f} ({host * row['fps'] / 1000:.1%})"


def _python_on_same_bundle(results: dict, run: dict, objects: int) -> str:
    """The Python runtime's FPS and host share on the bundle a device run timed (matched by manifest checksum)."""
    runtimes = [b["runtime"] for b in results["bundles"] if b["manifest_sha256"] == run["bundle"]["manifest_sha256"]]
    rows = [r for r in results["video"] if r["runtime"] in runtimes and r["objects"] == objects]
    if not rows:
        return "-"
    row = rows[0]
    frame_ms = 1000 / row["fps"]
    host = frame_ms - sum(row.get("stage_ms_per_frame", {}).values())
    return f"{row['fps']:.2f} ({host / frame_ms:.1%})"


def marginal_object_cost(by_count: dict[int, dict]) -> float | None:
    """Cost of each extra object over the per-object stage time of one object (1.0 = no sharing)."""
    if 1 not in by_count or len(by_count) < 2 or "stage_ms_per_frame" not in by_count[1]:
        return None
    largest = max(by_count)
    frame_ms = {n: 1000.0 / row["fps"] for n, row in by_count.items()}
    per_object = frame_ms[1] - by_count[1]["stage_ms_per_frame"].get("image_encoder", 0.0)
    marginal = (frame_ms[largest] - frame_ms[1]) / (largest - 1)
    return marginal / per_object if per_object > 0 else None


def _plots(results: dict, by_stage: dict, fps: dict, report: Path) -> list[str]:
    """Save the plots beside the report, named after it (REPORT-...png), so no other file is overwritten."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    stages = list(by_stage)
    runtimes = sorted({r for entries in by_stage.values() for r in entries})
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(runtimes), 1)
    for i, runtime in enumerate(runtimes):
        values = [by_stage[s].get(runtime, {}).get("p50_ms", 0) for s in stages]
        axis.bar([x + i * width for x in range(len(stages))], values, width, label=runtime)
    axis.set_xticks([x + width * (len(runtimes) - 1) / 2 for x in range(len(stages))], stages)
    axis.set_ylabel("p50 latency (ms), 1 object")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("Latency per stage")
    figure.tight_layout()
    names.append(f"{report.stem}-latency_per_stage.png")
    figure.savefig(report.parent / names[-1], dpi=100)
    plt.close(figure)

    figure, axis = plt.subplots(figsize=(6, 4))
    for runtime, by_count in fps.items():
        counts = sorted(by_count)
        axis.plot(counts, [by_count[n]["fps"] for n in counts], marker="o", label=runtime)
    axis.set_xlabel("objects tracked")
    axis.set_ylabel("frames per second")
    axis.set_xscale("log", base=2)
    axis.legend()
    axis.set_title("Video tracking speed")
    figure.tight_layout()
    names.append(f"{report.stem}-fps_vs_objects.png")
    figure.savefig(report.parent / names[-1], dpi=100)
    plt.close(figure)

    # Speed and quality of each bundle together: one tracked frame's time against its worst stage cosine.
    points = []
    for bundle in results["bundles"]:
        summary = (bundle.get("parity") or {}).get("summary", {})
        cosines = [entry["min_cosine"] for entry in summary.values() if "min_cosine" in entry]
        one = fps.get(bundle["runtime"], {}).get(1)
        if cosines and one:
            points.append((bundle["runtime"], 1000.0 / one["fps"], min(cosines)))
    if points:
        figure, axis = plt.subplots(figsize=(6, 4))
        for runtime, milliseconds, cosine in points:
            axis.scatter([milliseconds], [cosine], label=runtime)
        eager = fps.get(EAGER, {}).get(1)
        if eager:
            axis.axvline(1000.0 / eager["fps"], color="grey", linestyle="--", label="transformers (eager)")
            axis.axvline(1000.0 / eager["fps"] / 3, color="grey", linestyle=":", label="3x transformers")
        axis.set_xlabel("ms per tracked frame, 1 object")
        axis.set_ylabel("lowest stage cosine vs fp32 reference")
        axis.legend(fontsize="small")
        axis.set_title("Speed and quality per bundle")
        figure.tight_layout()
        names.append(f"{report.stem}-speed_vs_quality.png")
        figure.savefig(report.parent / names[-1], dpi=100)
        plt.close(figure)
    return names


#: Float stages judged on their share of the measured fp32 peak (best float bundle), and the share asked for.
PEAK_TARGETS = {"image_encoder": 0.85, "memory_attention": 0.75, "memory_encoder": 0.50}
#: Objects tracked -> the video FPS a float bundle must reach, as a multiple of transformers' (a 4-object frame's
#: fp32 FLOP floor is about 2.1x transformers').
VIDEO_TARGETS = {1: 1.8, 4: 1.5}


def targets(results: dict, by_stage: dict, fps: dict) -> list[str]:
    """The product targets, each with the measured ratio and whether it is met. Stage latencies and the share of
    the fp32 peak compare float bundles only (equal arithmetic); reduced precision has its own targets."""
    lines = []
    quantized = {b["runtime"] for b in results["bundles"] if is_reduced(b)}
    for stage, runtimes in by_stage.items():
        bundles = sorted((row for runtime, row in runtimes.items() if runtime not in (EAGER, *quantized)),
                         key=lambda row: row["p50_ms"])
        eager = runtimes.get(EAGER)
        if not bundles or eager is None:
            continue
        others = "".join(f", {row['runtime']} {row['p50_ms']:.1f} ms" for row in bundles[1:])
        lines.append(
            f"- {stage}: fastest fp32 bundle ({bundles[0]['runtime']}) {bundles[0]['p50_ms']:.1f} ms vs eager "
            f"{eager['p50_ms']:.1f} ms{others}: {verdict(bundles[0]['p50_ms'] <= eager['p50_ms'])}"
        )
    for stage, share in PEAK_TARGETS.items():
        rows = [row for row in by_stage.get(stage, {}).values() if row["runtime"] not in (EAGER, *quantized)]
        if rows:
            best = max(rows, key=lambda row: row["fraction_of_peak"])
            fraction = best["fraction_of_peak"]
            lines.append(
                f"- {stage.replace('_', ' ')} at {100 * fraction:.0f}% of the measured fp32 peak ({best['runtime']}; "
                f"target {100 * share:.0f}%): " + verdict(fraction >= share, fraction)
            )
    eager = fps.get(EAGER, {})
    for runtime, by_count in fps.items():
        if runtime == EAGER or runtime in quantized:
            continue
        for n, target in VIDEO_TARGETS.items():
            if n in by_count and n in eager:
                ratio = by_count[n]["fps"] / eager[n]["fps"]
                lines.append(f"- video, {runtime}, {n} object(s): {ratio:.2f}x transformers' FPS (target {target}x): "
                             + verdict(ratio >= target))
        cost = marginal_object_cost(by_count)
        if cost is not None:
            lines.append(f"- video, {runtime}: each extra object costs {cost:.2f}x the per-object stage time of one "
                         f"object (target at most 0.9x): " + verdict(cost <= 0.9))
    return lines


def float_sibling(bundle: dict, bundles: list[dict]) -> dict | None:
    """The unquantized bundle of the same backend (and delegate) in the same run, to compare a reduced one with."""
    recipe = bundle["recipe"]
    for other in bundles:
        theirs = other["recipe"]
        if (not is_reduced(other) and theirs["backend"] == recipe["backend"]
                and theirs.get("delegate") == recipe.get("delegate")):
            return other
    return None


def reduced_precision(results: dict, by_stage: dict, fps: dict) -> tuple[list[str], list[str]]:
    """(report section, target lines) for the bundles of reduced-precision recipes: per stage the scheme it
    kept (or why it fell back), size and latency against the float bundle of the same backend, and the quality
    the gates measured against the fp32 reference; then the whole-use gates."""
    reduced = [b for b in results["bundles"] if is_reduced(b)]
    if not reduced:
        return [], []
    lines: list[str] = []
    targets, eager = [], fps.get(EAGER, {})
    for bundle in reduced:  # one table per bundle, its gate figures under it
        lines += ["| bundle | stage | precision | size MB (vs float) | p50 ms (vs float) | min cosine | min PSNR dB |",
                  "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
        runtime, sibling = bundle["runtime"], float_sibling(bundle, results["bundles"])
        summary = (bundle.get("parity") or {}).get("summary", {})
        total = sum(a["size_bytes"] for a in bundle["artifacts"].values())
        schemes = reduced_schemes(bundle)
        for stage, artifact in bundle["artifacts"].items():
            scheme = artifact.get("quantization") or ("float (fallback: " + artifact["quantization_fallback"] + ")"
                                                      if "quantization_fallback" in artifact else schemes.get(stage, "float"))
            if artifact.get("quantized_modules"):
                scheme += " of " + ", ".join(f"`{pattern}`" for pattern in artifact["quantized_modules"])
            size = f"{artifact['size_bytes'] / 1e6:.1f}"
            latency = by_stage.get(stage, {}).get(runtime)
            ms = f"{latency['p50_ms']:.1f}" if latency else "-"
            if sibling:
                size += f" ({artifact['size_bytes'] / sibling['artifacts'][stage]['size_bytes']:.2f}x)"
                base = by_stage.get(stage, {}).get(sibling["runtime"])
                if latency and base:
                    ms += f" ({latency['p50_ms'] / base['p50_ms']:.2f}x)"
            quality = summary.get(stage, {})
            cosine = f"{quality['min_cosine']:.5f}" if "min_cosine" in quality else "-"
            psnr = f"{float(quality['min_psnr_db']):.1f}" if "min_psnr_db" in quality else "-"
            lines.append(f"| {runtime} | {stage} | {scheme} | {size} | {ms} | {cosine} | {psnr} |")
        gates = bundle.get("parity") or {}
        if gates.get("examples"):
            lines.append("")
            lines.append(f"{runtime}: documentation examples, mask IoU "
                         + ", ".join(f"{e['name']} {e['mask_iou']:.4f}" for e in gates["examples"]))
        if gates.get("tracking"):
            t = gates["tracking"]
            lines.append("")
            lines.append(f"{runtime}: tracking gate, {t['objects']} objects x {t['frames']} frames of videos/bedroom: mean "
                         f"mask IoU {t['mean_iou']:.4f}, min {t['min_iou']:.4f}, presence agreement "
                         f"{t['presence_agreement']:.1%}, logits min PSNR {t['min_logit_psnr_db']} dB")
        lines.append("")
        if sibling:
            encoder = by_stage.get("image_encoder", {})
            if runtime in encoder and sibling["runtime"] in encoder:
                ratio = encoder[runtime]["p50_ms"] / encoder[sibling["runtime"]]["p50_ms"]
                targets.append(f"- {runtime}: image encoder at {ratio:.2f}x the latency of {sibling['runtime']} "
                               f"(target at most 0.5x): " + verdict(ratio <= 0.5))
            ratio = total / sum(a["size_bytes"] for a in sibling["artifacts"].values())
            targets.append(f"- {runtime}: artifacts {ratio:.0%} of {sibling['runtime']}'s size (target at most 30%): "
                           + verdict(ratio <= 0.3))
    for n in (1, 4):
        rows = [(b["runtime"], fps.get(b["runtime"], {}).get(n)) for b in reduced]
        rows = [(runtime, row) for runtime, row in rows if row and n in eager]
        if rows:
            runtime, row = max(rows, key=lambda item: item[1]["fps"])
            ratio = row["fps"] / eager[n]["fps"]
            targets.append(f"- best reduced-precision bundle, {n} object(s): {runtime} at {ratio:.2f}x transformers' "
                           "video FPS (target at least 3x): " + verdict(ratio >= 3))
    return lines, targets


def _export_provenance(bundles: list[dict]) -> list[str]:
    """Where the export times come from: this run (benchmarks/run.py exports first), or only the manifests."""
    exported = ", ".join(f"{b['runtime']} exported {b.get('exported') or 'at an unrecorded time'}" for b in bundles)
    lines = [f"Stage times are read from each bundle's manifest, measured by the export that wrote it ({exported})."]
    in_run = [b for b in bundles if "export_wall_seconds_this_run" in b]
    if in_run:
        lines.append("Exported in this run, wall time of the whole export (stages, parity check, manifest): "
                     + ", ".join(f"{b['runtime']} {b['export_wall_seconds_this_run']:.0f} s" for b in in_run) + ".")
    return lines


def write_report(results: dict, report: Path, notes: str = "") -> Path:
    """Write the Markdown report and its plots next to it."""
    report.parent.mkdir(parents=True, exist_ok=True)
    stage_lines, by_stage = _stage_table(results)
    video_lines, fps = _video_tables(results)
    plots = _plots(results, by_stage, fps, report)
    reduced_lines, reduced_targets = reduced_precision(results, by_stage, fps)
    machine, peak = results["machine"], results["machine"]["fp32_peak"]
    threads = ", ".join(f"{runtime} {count}" for runtime, count in results["threads"].items())
    lines = [
        f"{MARKDOWN_MARKER} bench: regenerated reports replace this file -->",
        "# edgetam-export benchmark report",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['os']}. Threads per runtime: {threads}.",
        f"fp32 peak {peak['gflops']} GFLOP/s ({peak['method']}; one thread {peak['fma_single_thread_gflops']}, "
        f"best torch.mm {peak['gemm_gflops']} GFLOP/s), measured in this run: every efficiency is a share of it.",
        f"Commit {results['commit']}, {results['created']}. Model: {results['model']['source']} "
        f"(size {results['model'].get('size')}, weights {results['model']['weights_sha256'][:12]}).",
        f"Settings: {results['settings']}. All figures come from one process (`benchmarks/results/*.json`); every "
        "runtime gets the same warm-up calls (stages, image mode) or warm-up frames (video) before timing, and the "
        "runtimes are timed in turns (run i of each before run i + 1 of any, with an untimed "
        f"{1000 * SETTLE_SECONDS:.0f} ms pause after each call so no runtime's spinning worker threads slow the "
        "next), so a machine that slows down during the run slows all of them alike.",
        "",
        "## Targets",
        *targets(results, by_stage, fps),
        *reduced_targets,
        "",
        "## Latency per stage (1 object; the runtimes are timed in turns, call by call)",
        *stage_lines,
        "",
        f"![latency per stage]({plots[0]})",
        "",
        "## Image mode (encoder once + one click decoded, pre/post-processing included)",
        "| runtime | p50 ms | p90 ms |",
        "| --- | ---: | ---: |",
        *[f"| {r['runtime']} | {r['p50_ms']:.1f} | {r['p90_ms']:.1f} |" for r in results["image_mode"]],
        "",
        f"## Video tracking ({results['video'][0]['frames']} timed frames of videos/bedroom after the prompt frame and "
        f"{results['settings']['warmup']} warm-up frames; the runtimes track in turns, frame by frame)",
        *video_lines,
        "",
        f"![FPS vs objects]({plots[1]})",
        "",
        "Stage time per frame (ms) inside the bundle runs:",
        "",
        *[f"- {r['runtime']}, {r['objects']} objects: {r['stage_ms_per_frame']}" for r in results["video"]
          if "stage_ms_per_frame" in r],
        "",
        *(["## Reduced precision: speed, size and quality together",
           "Quality against the fp32 reference on the same weights, as the bundle's gates measured it at export.", "",
           *reduced_lines, ""] if reduced_lines else []),
        *([f"![speed and quality]({plots[2]})", ""] if len(plots) > 2 else []),
        "## Export cost and size",
        *_export_provenance(results["bundles"]),
        "",
        "| runtime | stage | export s (torch.export + lowering) | size MB |",
        "| --- | --- | ---: | ---: |",
        *[
            f"| {b['runtime']} | {stage} | {sum(a['export_seconds'].values()):.1f} | {a['size_bytes'] / 1e6:.1f} |"
            for b in results["bundles"] for stage, a in b["artifacts"].items()
        ],
        "",
        f"Peak resident memory of the benchmark process: {results['peak_rss_mb']} MB.",
    ]
    if results["device_runs"]:
        lines += ["", "## Device runs", "| device | runtime | stage | objects | p50 ms |", "| --- | --- | --- | ---: | ---: |"]
        for run in results["device_runs"]:
            for row in run["stages"]:
                lines.append(f"| {run['device']['model']} ({run['device']['os']}) | {run['runtime']['name']} "
                             f"{run['runtime'].get('compute_units', '')} | {row['stage']} | {row['objects']} | "
                             f"{row['p50_ms']:.1f} |")
        video = [(run, row) for run in results["device_runs"] for row in run.get("video", [])]
        if video:
            lines += ["", "Video on the device runs: each frame split into time inside the stage runners and host time around "
                      "them, beside the Python runtime on the same bundle (same frames, warm-up and threads) where this "
                      "results file has it.", "",
                      "| device | runtime | objects | frames/s | ms a frame in the runners | host ms a frame (share) "
                      "| Python runtime, same bundle: frames/s (host share) |",
                      "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
            for run, row in video:
                lines.append(f"| {run['device']['model']} ({run['device']['os']}) | {run['runtime']['name']} "
                             f"{run['runtime'].get('version', '')} | {row['objects']} | {row['fps']:.2f} | "
                             f"{_host_cells(row)} | {_python_on_same_bundle(results, run, row['objects'])} |")
    if notes:
        lines += ["", "## Notes", notes.strip()]
    write_text_atomic(report, "\n".join(lines) + "\n")
    return report
