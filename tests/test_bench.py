"""The benchmark harness runs, writes schema-valid JSON, and its ratios come from one run's numbers."""

from __future__ import annotations

import copy
import json

import pytest

from edgetam_export.bench import EAGER, merge_device_run, run_benchmarks, time_calls, validate
from edgetam_export.bench_report import marginal_object_cost, write_report
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.registry import STAGES


@pytest.fixture(scope="module")
def results(tiny_bundles, data_dir):
    paths = [bundle.path for bundle in tiny_bundles.values()]
    return run_benchmarks(paths, data_dir=data_dir, warmup=1, runs=2, video_frames=3, object_counts=(1, 2))


def test_results_cover_every_stage_runtime_and_validate(results, tiny_bundles):
    validate(results, "results.schema.json")
    runtimes = {EAGER, *tiny_bundles}
    assert {(r["stage"], r["runtime"]) for r in results["stages"]} == {
        (s, r) for s in STAGES for r in runtimes
    }
    for row in results["stages"]:
        assert row["p90_ms"] >= row["p50_ms"] > 0 and row["gflop"] > 0
        # Efficiency is derived from this run's own latency and machine peak.
        assert row["gflops_per_s"] == pytest.approx(row["gflop"] / (row["p50_ms"] / 1000), rel=0.01)
    assert {r["runtime"] for r in results["video"]} == runtimes
    assert {r["objects"] for r in results["video"]} == {1, 2}
    assert results["machine"]["fp32_matmul_gflops"] > 1 and results["machine"]["cores"] >= 1
    assert results["commit"] and results["bundles"][0]["manifest_sha256"]


def test_report_ratios_come_from_the_results(results, tmp_path):
    report = write_report(results, tmp_path / "REPORT.md")
    text = report.read_text()
    assert (tmp_path / "REPORT-latency_per_stage.png").stat().st_size > 1000
    assert (tmp_path / "REPORT-fps_vs_objects.png").stat().st_size > 1000
    eager = next(r for r in results["stages"] if r["stage"] == "image_encoder" and r["runtime"] == EAGER)
    other = next(r for r in results["stages"] if r["stage"] == "image_encoder" and r["runtime"] == "onnx-fp32")
    assert f"{eager['p50_ms'] / other['p50_ms']:.2f}x" in text
    assert "## Targets" in text and ("**met**" in text or "**missed**" in text)


def test_marginal_object_cost():
    rows = {1: {"fps": 1.0, "stage_ms_per_frame": {"image_encoder": 400.0}}, 3: {"fps": 1000.0 / 2200.0}}
    # one object: 1000 ms, 600 of them per object; each extra object adds 600 ms -> 1.0
    assert marginal_object_cost(rows) == pytest.approx(1.0)


def test_device_runs_merge_after_validation(results, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    run = {
        "schema_version": 1, "created": "2026-11-25T10:00:00Z",
        "device": {"model": "iPhone16,2", "os": "iOS 18.1"},
        "bundle": {"recipe": "coreml-fp16", "manifest_sha256": "a" * 64},
        "runtime": {"name": "coreml", "version": "8.0", "compute_units": "all"},
        "stages": [{"stage": "image_encoder", "objects": 1, "runs": 20, "p50_ms": 14.2, "p90_ms": 15.0}],
    }
    device = tmp_path / "device.json"
    device.write_text(json.dumps(run))
    merged = merge_device_run(path, device)
    assert merged["device_runs"] == [run]
    report = write_report(merged, tmp_path / "REPORT.md").read_text()
    assert "iPhone16,2" in report
    broken = copy.deepcopy(run)
    broken["stages"][0]["stage"] = "decoder"
    device.write_text(json.dumps(broken))
    with pytest.raises(EdgeTamExportError, match="stages/0/stage"):
        merge_device_run(path, device)


def test_timing_statistics():
    stats = time_calls(lambda: sum(range(1000)), warmup=1, runs=5)
    assert stats["runs"] == 5 and 0 < stats["p50_ms"] <= stats["p90_ms"]
