"""The CLI as a user runs it: real subprocesses, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = (os.environ | (env or {})) | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "edgetam_export", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr


def test_recipes_lists_every_shipped_recipe():
    result = cli("recipes")
    assert result.returncode == 0
    for name in ("executorch-xnnpack-fp32", "executorch-portable-fp32", "onnx-fp32"):
        assert name in result.stdout


def test_export_verify_info_round_trip(tmp_path, data_dir):
    """Exported where no sample data is found: parity runs on synthetic pictures, and the export says so at once
    and records it in the manifest and the model card."""
    out = tmp_path / "models" / "edgetam-onnx"
    exported = cli(
        "export", "--model", "random", "--seed", "0", "--size", "tiny", "--recipe", "onnx-fp32",
        "--max-objects", "2", "--out", str(out), cwd=tmp_path,
    )
    assert exported.returncode == 0, exported.stderr
    assert "parity passed" in exported.stdout
    assert "parity runs on synthetic pictures" in exported.stderr.splitlines()[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["pictures"].startswith("synthetic pictures")
    assert "synthetic pictures" in (out / "README.md").read_text()

    report = tmp_path / "parity.json"
    verified = cli("verify", str(out), "--report", str(report), "--data", str(data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "memory_attention" in verified.stdout and "passed:" in verified.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["summary"]["prompt_decoder"]["min_mask_iou"] >= 0.99

    # --model random without --size/--seed reloads the manifest's size and seed (tiny, 0), not the defaults.
    again = cli("verify", str(out), "--model", "random", "--data", str(data_dir))
    assert again.returncode == 0, again.stderr

    info = cli("info", str(out))
    assert info.returncode == 0
    assert "point_labels" in info.stdout and "parity   passed" in info.stdout

    contracts = cli("stages", "--size", "tiny")
    assert json.loads(contracts.stdout)["prompt_decoder"]["inputs"][4]["name"] == "point_labels"

    (out / "image_encoder.onnx").write_bytes(b"tampered")
    assert_one_line_error(cli("verify", str(out)), "does not match its manifest checksum")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("export", "--recipe", "nope"), "unknown recipe 'nope'"),
        (("export", "--model", "missing/edgetam.pt"), "does not exist"),
        (("export", "--model", "yonigozlan/edgetam-1"), "could not fetch 'yonigozlan/edgetam-1'"),
        (("export", "--size", "huge"), "'huge' is not one of 'full', 'tiny'"),
        (("export", "--max-objects", "0"), "--max-objects must be a whole number from 1 to 64"),
        (("info", "no/such/bundle"), "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, fragment):
    assert_one_line_error(cli(*args), fragment)


def test_hub_id_without_network_answers_at_once_in_one_line(tmp_path):
    """No HF_HUB_OFFLINE, but the hub does not answer (a closed port on this machine): one line, no retries."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env |= {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "edgetam_export", "export", "--model", "facebook/EdgeTAM",
                             "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env, timeout=300)
    assert_one_line_error(result, "could not fetch 'facebook/EdgeTAM' from the Hugging Face Hub (no network")
    assert "Retry" not in result.stderr and "retry" not in result.stderr
    assert not (tmp_path / "b").exists()


def test_unsupported_backend_and_unwritable_output(tmp_path):
    recipe = tmp_path / "tflite.toml"
    recipe.write_text('name = "tflite"\ndescription = "x"\nbackend = "tflite"\n')
    assert_one_line_error(cli("export", "--size", "tiny", "--recipe", str(recipe)), "supported backends are")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert_one_line_error(
        cli("export", "--size", "tiny", "--recipe", "onnx-fp32", "--out", str(blocker / "bundle")),
        "cannot write the bundle",
    )


@pytest.fixture(scope="module")
def onnx_bundle(tiny_bundles):
    return str(tiny_bundles["onnx-fp32"].path)


def test_segment_writes_ranked_masks_overlay_and_json(onnx_bundle, data_dir, tmp_path):
    from PIL import Image

    image = data_dir / "images" / "truck.jpg"
    result = cli("segment", str(image), "--bundle", onnx_bundle, "--point", "500,375", "--out", str(tmp_path / "one"))
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "one" / "result.json").read_text())
    assert [(m["object"], m["rank"]) for m in data["masks"]] == [(0, 0), (0, 1), (0, 2)]
    scores = [m["score"] for m in data["masks"]]
    assert scores == sorted(scores, reverse=True)
    mask = Image.open(tmp_path / "one" / data["masks"][0]["file"])
    assert mask.size == (1800, 1200) and set(mask.getdata()) <= {0, 255}
    assert Image.open(tmp_path / "one" / "overlay.png").size == (1800, 1200)

    several = cli("segment", str(image), "--bundle", onnx_bundle, "--box", "75,275,1725,850",
                  "--box", "425,600,700,875", "--out", str(tmp_path / "boxes"))
    assert several.returncode == 0, several.stderr
    data = json.loads((tmp_path / "boxes" / "result.json").read_text())
    assert [(m["object"], m["rank"]) for m in data["masks"]] == [(0, 0), (1, 0)]

    auto = cli("segment", str(image), "--bundle", onnx_bundle, "--auto", "--points-per-side", "4",
               "--pred-iou-thresh", "0", "--stability-thresh", "0", "--out", str(tmp_path / "auto"))
    assert auto.returncode == 0, auto.stderr
    assert "prompts 16/16" in auto.stderr
    assert json.loads((tmp_path / "auto" / "result.json").read_text())["mode"] == "automatic"


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--point", "5000,10"), "outside the 1800x1200 image"),
        (("--point", "abc"), "--point 'abc' is not [OBJ:]X,Y[,LABEL]"),
        (("--box", "1,2,3"), "is not [OBJ:]X0,Y0,X1,Y1"),
        (tuple(a for i in range(9) for a in ("--point", f"{10 + i},10")), "the bundle has 8"),
        ((), "no prompt given"),
    ],
)
def test_segment_bad_input(onnx_bundle, data_dir, tmp_path, extra, fragment):
    image = data_dir / "images" / "truck.jpg"
    assert_one_line_error(cli("segment", str(image), "--bundle", onnx_bundle, "--out", str(tmp_path), *extra), fragment)


def test_executorch_bundles_run_without_native_log_noise(tiny_bundles, data_dir, tmp_path):
    """ExecuTorch's cpuinfo probe prints five lines on every program load; users see only our output."""
    result = cli("segment", str(data_dir / "images" / "truck.jpg"), "--bundle",
                 str(tiny_bundles["executorch-xnnpack-fp32"].path), "--point", "500,375", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "cpuinfo" not in result.stderr and "Traceback" not in result.stderr
    assert result.stdout.strip().startswith("1 objects, 3 masks")


def test_segment_unreadable_image(onnx_bundle, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    assert_one_line_error(
        cli("segment", str(broken), "--bundle", onnx_bundle, "--point", "1,1", "--out", str(tmp_path / "o")),
        "cannot decode image",
    )


def test_track_writes_masks_overlay_video_and_summary(onnx_bundle, data_dir, tmp_path):
    from PIL import Image

    frames = tmp_path / "clip"
    frames.mkdir()
    for path in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:12]:
        (frames / path.name).write_bytes(path.read_bytes())
    drawn = np.zeros((540, 960), np.uint8)
    drawn[250:420, 600:760] = 255
    Image.fromarray(drawn).save(tmp_path / "cushion.png")
    out = tmp_path / "tracked"
    result = cli("track", str(frames), "--bundle", onnx_bundle, "--point", "0:1:210,350",
                 "--box", "4:2:500,150,800,450", "--mask", f"6:3:{tmp_path / 'cushion.png'}", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "frames/s" in result.stderr
    assert sorted(p.name for p in (out / "masks" / "1").iterdir()) == [f"{i:05d}.png" for i in range(12)]
    assert sorted(p.name for p in (out / "masks" / "2").iterdir()) == [f"{i:05d}.png" for i in range(4, 12)]
    assert Image.open(out / "masks" / "2" / "00004.png").size == (960, 540)
    # On its prompt frame, a mask prompt is its own output (up to the model's resampling at the edges).
    written = np.asarray(Image.open(out / "masks" / "3" / "00006.png")) > 0
    assert (written == (drawn > 0)).mean() > 0.99
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_tracked"] == 12 and summary["objects"] == [1, 2, 3]
    assert set(summary["stage_seconds"]) == {"image_encoder", "prompt_decoder", "memory_encoder", "memory_attention",
                                             "mask_prompt_encoder"}
    import imageio.v2 as imageio

    assert imageio.get_reader(str(out / "overlay.mp4")).count_frames() == 12

    # A re-run into the same folder leaves only its own files: the other objects and their masks are gone.
    rerun = cli("track", str(frames), "--bundle", onnx_bundle, "--point", "0:1:210,350", "--out", str(out))
    assert rerun.returncode == 0, rerun.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["1"]

    # A frame of another size part-way: one error line, and no half-written output (nothing at --out, no
    # staging folder left beside it).
    Image.open(frames / "00008.jpg").resize((480, 270)).save(frames / "00008.jpg")
    broken = cli("track", str(frames), "--bundle", onnx_bundle, "--point", "0:1:210,350", "--out", str(tmp_path / "b"))
    assert_one_line_error(broken, "frame 8 is 480x270 but the video is 960x540")
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (("--point", "250:1:10,10"), "a prompt is on frame 250"),
        (("--point", "0:1:5000,10"), "outside the 960x540 frame"),
        (("--point", "x:1:10,10"), "is not FRAME:OBJ:X,Y[,LABEL]"),
        (("--mask", "0:1"), "is not FRAME:OBJ:PNG"),
        (("--mask", "0:1:missing.png"), "mask 'missing.png' does not exist"),
        (("--mask", "0:1:m.png", "--point", "0:1:5,5"), "a mask prompt stands alone"),
        ((), "no prompt given"),
    ],
)
def test_track_bad_input(onnx_bundle, data_dir, tmp_path, extra, fragment):
    video = data_dir / "videos" / "bedroom"
    assert_one_line_error(cli("track", str(video), "--bundle", onnx_bundle, "--out", str(tmp_path), *extra), fragment)


def test_track_reverse_writes_every_frame_and_the_overlay_in_frame_order(onnx_bundle, data_dir, tmp_path):
    import imageio.v2 as imageio

    frames = tmp_path / "clip"
    frames.mkdir()
    sources = []
    for index, path in enumerate(sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:10]):
        # Frame i is darkened by its own factor, so each overlay frame can be traced back to its frame.
        picture = np.asarray(Image.open(path).convert("RGB")).astype(np.float32) * (0.1 + 0.1 * index)
        sources.append(picture.clip(0, 255).astype(np.uint8))
        Image.fromarray(sources[-1]).save(frames / path.name)
    out = tmp_path / "tracked"
    result = cli("track", str(frames), "--bundle", onnx_bundle, "--point", "6:1:210,350", "--reverse", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "track: frame 10/10" in result.stderr and "ETA" in result.stderr
    assert sorted(p.name for p in (out / "masks" / "1").iterdir()) == [f"{i:05d}.png" for i in range(10)]
    overlay = [np.asarray(frame, np.float32) for frame in imageio.get_reader(str(out / "overlay.mp4"))]
    assert len(overlay) == 10
    for position, frame in enumerate(overlay):
        # Compare where the overlay shows the frame itself: outside the object's mask and below the legend.
        untouched = ~(np.asarray(Image.open(out / "masks" / "1" / f"{position:05d}.png")) > 0)
        untouched[:80] = False
        errors = [np.abs(frame[untouched] - source[untouched]).mean() for source in sources]
        assert int(np.argmin(errors)) == position, errors


def test_object_counts_are_measured_once_each_in_order():
    from edgetam_export.cli import object_counts

    assert object_counts("1,1,1") == (1,)
    assert object_counts("8,1,4,1") == (1, 4, 8)


def test_outputs_of_random_weights_say_so(onnx_bundle, data_dir, tmp_path):
    """result.json, summary.json and `info` warn that a random-weights bundle's masks mean nothing."""
    image = str(data_dir / "images" / "groceries.jpg")
    assert cli("segment", image, "--bundle", onnx_bundle, "--point", "400,300", "--out", str(tmp_path / "s")).returncode == 0
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert result["weights"] == "random" and result["warning"].startswith("random weights (seed 0)")
    frames = tmp_path / "frames"
    frames.mkdir()
    for frame in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:2]:
        (frames / frame.name).write_bytes(frame.read_bytes())
    assert cli("track", str(frames), "--bundle", onnx_bundle, "--point", "0:1:210,350", "--out", str(tmp_path / "t")
               ).returncode == 0
    assert json.loads((tmp_path / "t" / "summary.json").read_text())["warning"].startswith("random weights")
    info = cli("info", onnx_bundle)
    assert info.returncode == 0 and "warning  random weights" in info.stdout
    assert "every stage's inputs and outputs match its contract" in info.stdout


def test_data_variable_pointing_nowhere_is_one_line(onnx_bundle, tmp_path):
    result = cli("verify", onnx_bundle, env={"EDGETAM_EXPORT_DATA": str(tmp_path / "nowhere")})
    assert_one_line_error(result, f"EDGETAM_EXPORT_DATA '{tmp_path / 'nowhere'}' does not exist")
    assert "or unset EDGETAM_EXPORT_DATA" in result.stderr


class _Server:
    """A local HTTP server of the sample data (127.0.0.1 only), optionally serving one file altered."""

    def __init__(self, root: Path, altered: str | None = None) -> None:
        import functools
        import http.server
        import threading

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if altered and self.path.endswith(altered):
                    self.send_response(200)
                    self.send_header("Content-Length", "5")
                    self.end_headers()
                    self.wfile.write(b"wrong")
                    return
                super().do_GET()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_sample_data_downloads_every_file_checked(data_dir, tmp_path):
    server = _Server(data_dir)
    try:
        out = tmp_path / "data"
        result = cli("sample-data", "--out", str(out), "--base-url", server.url)
        assert result.returncode == 0, result.stderr
        assert "sample-data: file 203/203" in result.stderr
        for original in [*(data_dir / "images").glob("*.jpg"), *(data_dir / "videos" / "bedroom").glob("*.jpg")]:
            assert (out / original.relative_to(data_dir)).read_bytes() == original.read_bytes()
        # What it wrote is what --data takes, and a second download replaces the first (its own output).
        assert cli("sample-data", "--out", str(out), "--base-url", server.url).returncode == 0
        from edgetam_export.verification.sample_data import check_data_dir

        assert check_data_dir(out) == out
    finally:
        server.close()


def test_sample_data_refuses_an_altered_file_and_writes_nothing(data_dir, tmp_path):
    server = _Server(data_dir, altered="videos/bedroom/00117.jpg")
    try:
        result = cli("sample-data", "--out", str(tmp_path / "data"), "--base-url", server.url)
        assert_one_line_error(result, "videos/bedroom/00117.jpg is not the expected file")
        assert list(tmp_path.iterdir()) == []
    finally:
        server.close()
