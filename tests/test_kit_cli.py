"""`edgetam-kit`: EdgeTAMKit's Swift code running real `.pte` bundles through ExecuTorch's C++ runtime (the
`Module`, kernels and XNNPACK delegate of the executorch wheel), built by `ios_demo/scripts/build-kit-cli.sh` and
run as a user runs it. Its masks are compared with the Python runtime's on the same bundle, frame by frame."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetam_export.runtime.processing import ObjectPrompt
from edgetam_export.runtime.track import track_video
from edgetam_export.runtime.tracker import EdgeTamTracker

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bundle(tiny_bundles) -> Path:
    return tiny_bundles["executorch-xnnpack-fp32"].path


@pytest.fixture(scope="module")
def video(data_dir, tmp_path_factory) -> Path:
    """The first 30 frames of videos/bedroom (links, not copies)."""
    folder = tmp_path_factory.mktemp("video30")
    for path in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:30]:
        (folder / path.name).symlink_to(path)
    return folder


def run_kit(kit: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(kit), *map(str, args)], capture_output=True, text=True, timeout=900, cwd=cwd)


def masks_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) > 0 for p in sorted((folder / "masks").rglob("*.png"))}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@pytest.mark.parametrize("prompts", [
    ["--point", "500,375"],  # one object: its three multimask outputs
    ["--point", "500,375", "--point", "450,300,0", "--single-mask"],  # a negative click, single mask
    ["--box", "75,275,1725,850", "--box", "425,600,700,875", "--point", "1:500,700"],  # two boxed objects, a click
])
def test_segment_matches_the_python_cli(kit, bundle, data_dir, tmp_path, prompts):
    segment_like_python(kit, bundle, data_dir / "images" / "truck.jpg", prompts, tmp_path)


def segment_like_python(kit: Path, bundle: Path, image: Path, prompts: list[str], folder: Path) -> None:
    """`edgetam-kit segment` and `edgetam-export segment` on the same bundle and prompts: the same result.json
    records and masks (identical, or IoU >= 0.999 where a logit sits on the threshold)."""
    swift = run_kit(kit, "segment", image, "--bundle", bundle, *prompts, "--out", folder / "swift")
    assert swift.returncode == 0 and not swift.stderr, swift.stderr
    python = subprocess.run([sys.executable, "-m", "edgetam_export", "segment", str(image), "--bundle", str(bundle),
                             *prompts, "--out", str(folder / "python")], capture_output=True, text=True, timeout=900)
    assert python.returncode == 0, python.stderr
    ours, theirs = (json.loads((folder / side / "result.json").read_text()) for side in ("swift", "python"))
    for key in ("mode", "objects", "size", "backend", "weights", "warning"):
        assert ours.get(key) == theirs.get(key), key
    assert [(m["object"], m["rank"], m["file"]) for m in ours["masks"]] == [(m["object"], m["rank"], m["file"]) for m in theirs["masks"]]
    assert np.allclose([m["score"] for m in ours["masks"]], [m["score"] for m in theirs["masks"]], atol=1e-5)
    swift_masks, python_masks = masks_of(folder / "swift"), masks_of(folder / "python")
    assert swift_masks.keys() == python_masks.keys()
    for name, mask in swift_masks.items():
        assert (mask == python_masks[name]).all() or iou(mask, python_masks[name]) >= 0.999, name
    assert Image.open(folder / "swift" / "overlay.png").size == Image.open(image).size


def test_tracking_matches_the_python_runtime_with_an_absent_object_and_a_mask(kit, bundle, video, tmp_path):
    """3 objects over 30 frames: a click on frame 0, a box on frame 10, and on frame 5 a mask of one pixel, which
    the model's input size erases: that object is absent there (object score -10), its memory the no-object one."""
    dot = np.zeros((540, 960), dtype=np.uint8)
    dot[100, 700] = 255
    Image.fromarray(dot).save(tmp_path / "dot.png")
    flags = ["--point", "0:1:210,350", "--box", "10:2:500,150,800,450", "--mask", f"5:3:{tmp_path / 'dot.png'}"]
    swift = run_kit(kit, "track", video, "--bundle", bundle, *flags, "--out", tmp_path / "swift")
    assert swift.returncode == 0 and not swift.stderr, swift.stderr
    prompts = {(0, 1): ObjectPrompt.of([(210, 350)], [1], None), (10, 2): ObjectPrompt.of([], [], (500, 150, 800, 450)),
               (5, 3): tmp_path / "dot.png"}
    expected = track_video(bundle, video, tmp_path / "python", prompts)

    # The Python session takes the absent path the Swift one must match.
    session = EdgeTamTracker.from_bundle(bundle).init_session(video)
    session.add_mask(5, 3, dot > 0)
    assert session.run_frame(5).object_score_logits[0] <= 0

    summary = json.loads((tmp_path / "swift" / "summary.json").read_text())
    assert summary["objects"] == expected["objects"] == [1, 2, 3]
    assert summary["frames_tracked"] == expected["frames_tracked"] == 30
    assert set(summary["stage_seconds"]) == {"image_encoder", "prompt_decoder", "memory_encoder", "memory_attention",
                                             "mask_prompt_encoder"}
    swift_masks, python_masks = masks_of(tmp_path / "swift"), masks_of(tmp_path / "python")
    assert swift_masks.keys() == python_masks.keys() and len(swift_masks) == 30 + 25 + 20  # objects 1, 3, 2 from frames 0, 5, 10
    worst = min(iou(mask, python_masks[name]) for name, mask in swift_masks.items())
    assert worst >= 0.99, worst
    assert not swift_masks["masks/3/00005.png"].any() and not python_masks["masks/3/00005.png"].any()


def test_bench_writes_a_device_run_that_bench_import_merges(kit, bundle, video, tmp_path):
    out = tmp_path / "run.json"
    ran = run_kit(kit, "bench", bundle, "--out", out, "--frames", 8, "--objects", "1,2", "--runs", 2, "--warmup", 1,
                  "--threads", 2, "--video", video)
    assert ran.returncode == 0, ran.stderr
    run = json.loads(out.read_text())
    assert run["runtime"]["name"] == "executorch" and run["runtime"]["threads"] == 2
    assert run["runtime"]["version"].split("+")[0] == version("executorch").split("+")[0]  # version.py: "1.5.1+cpu"
    assert [v["objects"] for v in run["video"]] == [1, 2] and all(v["frames"] == 8 - 1 - 1 for v in run["video"])  # less the prompted frame and 1 warm-up frame
    for row in run["video"]:  # the frame splits into time in the runners and host time around them
        assert row["runner_ms_per_frame"] > 0 and row["runner_ms_per_frame"] + row["host_ms_per_frame"] == pytest.approx(
            1000 / row["fps"], rel=1e-6)
    results = tmp_path / "results.json"
    shutil.copy(REPO / "benchmarks" / "results" / "cpu-2core-full.json", results)
    imported = subprocess.run([sys.executable, "-m", "edgetam_export", "bench", "import", str(out), "--report",
                               str(results), "--markdown", str(tmp_path / "REPORT.md")], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "host ms a frame" in (tmp_path / "REPORT.md").read_text()


@pytest.fixture(scope="module")
def redescribed_bundles(bundle, tmp_path_factory) -> dict[str, Path]:
    """The tiny ExecuTorch bundle as exports that need kernels edgetam-kit does not link would describe it: fused
    attention (llama::custom_sdpa) and the OpenVINO delegate."""
    copies = {}
    for place, field, value in (("FUSEDBUNDLE", "attention", "fused"), ("OPENVINOBUNDLE", "delegate", "openvino")):
        copy = copies[place] = tmp_path_factory.mktemp(place.lower()) / "bundle"
        shutil.copytree(bundle, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["recipe"][field] = value
        (copy / "manifest.json").write_text(json.dumps(manifest))
    return copies


@pytest.mark.parametrize("args, message", [
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--out", "OUT"], "no prompt given"),
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--point", "5000,10", "--out", "OUT"], "outside"),
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--point", "1,2,3", "--out", "OUT"], "label must be 1"),
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--point", "1,2", "--pointt", "3,4", "--out", "OUT"], "no such option"),
    (["segment", "IMAGE", "--bundle", "missing", "--point", "1,2", "--out", "OUT"], "missing"),
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--box", "10,10,5,20", "--out", "OUT"], "box"),
    (["segment", "IMAGE", "--bundle", "BUNDLE", "--point", "1,2", "--out", "USERFOLDER"], "never replaced"),
    (["segment", "VIDEO", "--bundle", "BUNDLE", "--point", "1,2", "--out", "OUT"], "not a JPEG or PNG"),
    (["track", "VIDEO", "--bundle", "BUNDLE", "--point", "40:1:10,10", "--out", "OUT"], "frames 0 to 29"),
    (["track", "VIDEO", "--bundle", "BUNDLE", "--point", "1:10,10", "--out", "OUT"], "FRAME:OBJ:X,Y"),
    (["track", "VIDEO", "--bundle", "BUNDLE", "--mask", "0:1:{EMPTYMASK}", "--out", "OUT"], "no nonzero pixel"),
    (["track", "IMAGE", "--bundle", "BUNDLE", "--point", "0:1:10,10", "--out", "OUT"], "not a folder of frames"),
    (["bench", "BUNDLE", "--out", "USERFILE", "--video", "VIDEO"], "never replaced"),
    (["bench", "BUNDLE", "--out", "OUT", "--objects", "1,x", "--video", "VIDEO"], "--objects"),
    (["bench", "ONNXBUNDLE", "--out", "OUT", "--video", "VIDEO"], "'onnx-fp32' is a onnx bundle; export an executorch-xnnpack recipe"),
    (["bench", "FUSEDBUNDLE", "--out", "OUT", "--video", "VIDEO"], "does not link; export it with attention = \"matmul\""),
    (["bench", "OPENVINOBUNDLE", "--out", "OUT", "--video", "VIDEO"], "delegates to OpenVINO, which edgetam-kit does not link"),
    (["convert"], "no such command"),
])
def test_bad_input_is_one_error_line_and_nothing_written(kit, bundle, redescribed_bundles, video, tiny_bundles, data_dir, tmp_path,
                                                         args, message):
    user_folder = tmp_path / "mine"
    user_folder.mkdir()
    (user_folder / "notes.txt").write_text("keep me")
    (tmp_path / "results.json").write_text('{"mine": true}')
    Image.fromarray(np.zeros((540, 960), dtype=np.uint8)).save(tmp_path / "empty.png")
    places = {"IMAGE": data_dir / "images" / "truck.jpg", "BUNDLE": bundle, "OUT": tmp_path / "out", "VIDEO": video,
              "USERFOLDER": user_folder, "USERFILE": tmp_path / "results.json", "EMPTYMASK": tmp_path / "empty.png",
              "ONNXBUNDLE": tiny_bundles["onnx-fp32"].path, "missing": tmp_path / "missing", **redescribed_bundles}
    before = sorted(p.name for p in tmp_path.iterdir())
    ran = run_kit(kit, *[str(places[a]) if a in places else a.format(**places) for a in args])
    assert ran.returncode == 2, ran.stdout + ran.stderr
    lines = ran.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], ran.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no output, no staging folder
    assert (user_folder / "notes.txt").read_text() == "keep me" and (tmp_path / "results.json").read_text() == '{"mine": true}'


def test_ctrl_c_leaves_the_earlier_result_and_no_staging_folder(kit, bundle, video, tmp_path):
    out = tmp_path / "out"
    done = run_kit(kit, "track", video, "--bundle", bundle, "--point", "0:1:210,350", "--out", out)
    assert done.returncode == 0, done.stderr
    earlier = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    process = subprocess.Popen([str(kit), "track", str(video), "--bundle", str(bundle), "--point", "0:1:300,200",
                                "--point", "0:2:600,300", "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".out.*.partial/masks/*/0000[1-9].png")) and time.monotonic() < deadline:
        time.sleep(0.05)  # tracking is under way: frames are being written to the staging folder
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "interrupted" in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == earlier
