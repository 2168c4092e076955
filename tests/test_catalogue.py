"""A catalogue of bad input, as users type it: every case exits 2 with one line naming the problem and
the fix, prints no traceback, and leaves every file it was given (bundles, pictures, folders) untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgetam_export.errors import EdgeTamExportError
from tests.test_cli import assert_one_line_error, cli


def snapshot(*roots: Path) -> dict[str, str]:
    """Every file under `roots` with its content hash, and every folder: what a case must leave alone."""
    state = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return state


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, tiny_bundles, data_dir) -> Path:
    """User files of every kind the cases point at; built once, checked after every case."""
    root = tmp_path_factory.mktemp("sandbox")
    (root / "notes").mkdir()
    (root / "notes" / "notes.txt").write_text("my notes\n")
    (root / "file.txt").write_text("not a folder\n")
    (root / "corrupt.pt").write_bytes(b"\x80\x02 definitely not a checkpoint")
    (root / "bad.toml").write_text("name = [unclosed\n")
    bundle = root / "bundle"
    shutil.copytree(tiny_bundles["onnx-fp32"].path, bundle)
    for name, manifest in {
        "incomplete": {"format_version": 1},
        "newer": json.loads((bundle / "manifest.json").read_text()) | {"format_version": 99},
        "escaping": json.loads((bundle / "manifest.json").read_text()),
    }.items():
        (root / name).mkdir()
        if name == "escaping":
            manifest["stages"]["image_encoder"]["artifact"] = "../file.txt"
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    for name, change in {
        "missing-stage": lambda m: m["stages"].pop("memory_attention"),
        "zero-objects": lambda m: [m["shapes"].update(max_objects=0)]
        + [r["spec"].update(max_objects=0) for r in m["stages"].values()],
        "negative-slots": lambda m: m["shapes"].update(point_slots=-3),
        "huge-memory": lambda m: m["shapes"].update(memory_slots=10**9),
        "version-string": lambda m: m.update(format_version="1"),
        "version-zero": lambda m: m.update(format_version=0),
        "shared-file": lambda m: m["stages"]["prompt_decoder"].update(
            {k: m["stages"]["image_encoder"][k] for k in ("artifact", "sha256", "size_bytes")}),
    }.items():
        shutil.copytree(bundle, root / name)
        manifest = json.loads((bundle / "manifest.json").read_text())
        change(manifest)
        (root / name / "manifest.json").write_text(json.dumps(manifest))
    swapped = root / "swapped"  # two artifacts exchanged and the checksums rewritten to match
    shutil.copytree(bundle, swapped)
    manifest = json.loads((swapped / "manifest.json").read_text())
    for stage, other in (("prompt_decoder", "memory_encoder"), ("memory_encoder", "prompt_decoder")):
        shutil.copy(bundle / f"{other}.onnx", swapped / f"{stage}.onnx")
        manifest["stages"][stage].update({k: json.loads((bundle / "manifest.json").read_text())["stages"][other][k]
                                          for k in ("sha256", "size_bytes")})
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    Image.new("1", (20000, 20000)).save(root / "huge.png")  # 400 megapixels, a few kB as a file
    Image.fromarray(np.zeros((540, 960), np.uint8)).save(root / "empty-mask.png")
    (root / "user.json").write_text('{"mine": true}\n')
    (root / "absurd.toml").write_text(
        (Path(__file__).parent.parent / "recipes" / "onnx-fp32.toml").read_text().replace("max_objects = 8", "max_objects = 100000"))
    corrupt_data = root / "corrupt-data"
    shutil.copytree(data_dir / "images", corrupt_data / "images", ignore=shutil.ignore_patterns("cars.jpg"))
    (corrupt_data / "videos" / "bedroom").mkdir(parents=True)
    for frame in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:6]:
        shutil.copy(frame, corrupt_data / "videos" / "bedroom" / frame.name)
    (corrupt_data / "images" / "truck.jpg").write_bytes(b"not a jpeg")
    (root / "not-json").mkdir()
    (root / "not-json" / "manifest.json").write_text("{oops")
    tampered = root / "tampered"
    shutil.copytree(bundle, tampered)
    (tampered / "prompt_decoder.onnx").write_bytes(b"tampered")
    (root / "broken.png").write_bytes(b"\x89PNG not really")
    drawn = np.zeros((540, 960), np.uint8)
    drawn[250:420, 600:760] = 255
    Image.fromarray(drawn).save(root / "mask.png")
    Image.fromarray(drawn[:100, :100]).save(root / "small-mask.png")
    previous = root / "segmented"
    result = cli("segment", str(data_dir / "images" / "groceries.jpg"), "--bundle", str(bundle), "--point", "400,300",
                 "--out", str(previous))
    assert result.returncode == 0, result.stderr
    (previous / "my-edit.txt").write_text("a file the user added to an output folder")
    return root


S = "{sandbox}"
B = "{sandbox}/bundle"
IMAGE = "{data}/images/truck.jpg"
VIDEO = "{data}/videos/bedroom"
OUT = "{sandbox}/new-output"

CASES: list[tuple[str, tuple[str, ...], str]] = [
    # export
    ("unknown recipe", ("export", "--recipe", "nope", "--out", OUT), "unknown recipe 'nope'"),
    ("recipe not TOML", ("export", "--recipe", f"{S}/bad.toml", "--out", OUT), "is not valid TOML"),
    ("missing checkpoint", ("export", "--model", "missing/edgetam.pt", "--out", OUT), "does not exist"),
    ("corrupt checkpoint", ("export", "--model", f"{S}/corrupt.pt", "--size", "tiny", "--out", OUT),
     "is corrupt or not a PyTorch checkpoint"),
    ("folder without a model", ("export", "--model", f"{S}/notes", "--out", OUT), "not a usable EdgeTAM model folder"),
    ("hub id offline", ("export", "--model", "yonigozlan/edgetam-1", "--out", OUT), "could not fetch"),
    ("unknown size", ("export", "--size", "huge", "--out", OUT), "'huge' is not one of 'full', 'tiny'"),
    ("zero objects", ("export", "--max-objects", "0", "--out", OUT), "--max-objects must be a whole number from 1 to 64"),
    ("too many objects", ("export", "--max-objects", "100000", "--out", OUT), "--max-objects must be a whole number"),
    ("zero point slots", ("export", "--point-slots", "0", "--out", OUT), "--point-slots must be a whole number from 4"),
    ("too few point slots for a box", ("export", "--point-slots", "2", "--out", OUT), "--point-slots must be"),
    ("absurd recipe capacity", ("export", "--recipe", f"{S}/absurd.toml", "--out", OUT),
     "[shapes] max_objects must be a whole number from 1 to 64, got 100000"),
    ("gate frames without a gate", ("export", "--gate-frames", "10", "--out", OUT),
     "--gate-frames applies to recipes with a tracking gate; 'executorch-xnnpack-fp32' has none"),
    ("gate frames 0", ("export", "--recipe", "onnx-int8", "--gate-frames", "0", "--out", OUT),
     "--gate-frames must be from 2 to 200"),
    ("undecodable --data picture", ("export", "--size", "tiny", "--data", f"{S}/corrupt-data", "--out", OUT),
     "images/truck.jpg is not a readable picture"),
    ("out is a user folder", ("export", "--size", "tiny", "--out", f"{S}/notes"), "is never replaced"),
    ("out is a file", ("export", "--size", "tiny", "--out", f"{S}/file.txt"), "is a file, not a folder"),
    ("out is a folder of bundles", ("export", "--size", "tiny", "--out", S), "is never replaced"),
    ("out is a bundle, no --force", ("export", "--size", "tiny", "--out", B), "pass --force to replace it"),
    ("--force on a user folder", ("export", "--size", "tiny", "--force", "--out", f"{S}/notes"), "is never replaced"),
    ("missing --data", ("export", "--size", "tiny", "--data", "/nonexistent", "--out", OUT), "does not exist"),
    ("--data without pictures", ("export", "--size", "tiny", "--data", f"{S}/notes", "--out", OUT),
     "lacks images/truck.jpg"),
    # info
    ("no bundle", ("info", "no/such/bundle"), "does not exist"),
    ("bundle is a file", ("info", f"{S}/file.txt"), "is a file, not a bundle folder"),
    ("manifest lacks keys", ("info", f"{S}/incomplete"), "is incomplete (missing or invalid: model, recipe, shapes, stages)"),
    ("manifest not JSON", ("info", f"{S}/not-json"), "is corrupt or unreadable"),
    ("newer format", ("info", f"{S}/newer"), "newer than this edgetam-export reads"),
    ("artifact outside the bundle", ("info", f"{S}/escaping"), "must be a file name inside the bundle"),
    ("folder is not a bundle", ("info", f"{S}/notes"), "is not a bundle (no manifest.json)"),
    # bundles whose manifest or artifacts do not hold together (every command that opens one)
    ("missing stage", ("verify", f"{S}/missing-stage"), "lacks the stage memory_attention"),
    ("missing stage in track", ("track", VIDEO, "--bundle", f"{S}/missing-stage", "--point", "0:1:10,10", "--out", OUT),
     "lacks the stage memory_attention"),
    ("zero objects in a manifest", ("info", f"{S}/zero-objects"), "shapes.max_objects must be a whole number from 1"),
    ("negative point slots", ("segment", IMAGE, "--bundle", f"{S}/negative-slots", "--point", "1,1", "--out", OUT),
     "shapes.point_slots must be a whole number from 4 to 64, got -3"),
    ("a billion memory slots", ("track", VIDEO, "--bundle", f"{S}/huge-memory", "--point", "0:1:10,10", "--out", OUT),
     "shapes.memory_slots must be a whole number from 1 to 64"),
    ("format version as text", ("info", f"{S}/version-string"), "has format_version '1', not a version number"),
    ("format version 0", ("info", f"{S}/version-zero"), "has format_version 0, not a version number"),
    ("two stages on one file", ("info", f"{S}/shared-file"), "point at one file 'image_encoder.onnx'"),
    ("swapped artifacts: info", ("info", f"{S}/swapped"), "artifact 'prompt_decoder.onnx' does not match"),
    ("swapped artifacts: verify", ("verify", f"{S}/swapped"), "does not match the manifest's contract"),
    ("swapped artifacts: segment", ("segment", IMAGE, "--bundle", f"{S}/swapped", "--point", "500,375", "--out", OUT),
     "does not match the manifest's contract"),
    ("swapped artifacts: track", ("track", VIDEO, "--bundle", f"{S}/swapped", "--point", "0:1:10,10", "--out", OUT),
     "does not match the manifest's contract"),
    # verify
    ("report into the bundle", ("verify", B, "--report", f"{B}/manifest.json"), "lies inside the bundle"),
    ("report over a user file", ("verify", B, "--report", f"{S}/file.txt"), "is not a report written by edgetam-export"),
    ("tampered artifact", ("verify", f"{S}/tampered"), "does not match its manifest checksum"),
    ("coreml runtime on onnx", ("verify", B, "--coreml-runtime", "ALL"), "--coreml-runtime applies to Core ML bundles"),
    ("unknown coreml runtime", ("verify", B, "--coreml-runtime", "GPU"), "is not one of 'mil-interpreter'"),
    ("unwritable report", ("verify", B, "--report", f"{S}/file.txt/parity.json"), "cannot write --report"),
    ("report is a folder", ("verify", B, "--report", f"{S}/notes"), "--report '{sandbox}/notes' is a folder"),
    ("verify missing --data", ("verify", B, "--data", "/nonexistent"), "does not exist"),
    ("verify unknown model", ("verify", B, "--model", "no-such-model"), "model 'no-such-model' not found"),
    # segment
    ("point outside", ("segment", IMAGE, "--bundle", B, "--point", "5000,10", "--out", OUT), "outside the 1800x1200"),
    ("point not numbers", ("segment", IMAGE, "--bundle", B, "--point", "abc", "--out", OUT), "is not [OBJ:]X,Y"),
    ("fractional label", ("segment", IMAGE, "--bundle", B, "--point", "500,375,0.5", "--out", OUT),
     "the label must be 1 (positive) or 0 (negative), got 0.5"),
    ("label 2", ("segment", IMAGE, "--bundle", B, "--point", "500,375,2", "--out", OUT), "the label must be 1"),
    ("nan point", ("segment", IMAGE, "--bundle", B, "--point", "nan,nan", "--out", OUT), "not a finite number"),
    ("short box", ("segment", IMAGE, "--bundle", B, "--box", "1,2,3", "--out", OUT), "is not [OBJ:]X0,Y0,X1,Y1"),
    ("inverted box", ("segment", IMAGE, "--bundle", B, "--box", "700,600,425,875", "--out", OUT), "with x1 > x0"),
    ("box without area", ("segment", IMAGE, "--bundle", B, "--box", "100,100,100,200", "--out", OUT),
     "with x1 > x0 and y1 > y0 (a box with an area)"),
    ("400-megapixel picture", ("segment", f"{S}/huge.png", "--bundle", B, "--point", "1,1", "--out", OUT),
     "million pixels; downscale it"),
    ("300-character folder name", ("segment", IMAGE, "--bundle", B, "--point", "1,1", "--out", f"{S}/{'x' * 300}"),
     "File name too long"),
    ("auto grid of 100000", ("segment", IMAGE, "--bundle", B, "--auto", "--points-per-side", "100000", "--out", OUT),
     "--points-per-side must be a whole number from 1 to 256, got 100000"),
    ("no prompt", ("segment", IMAGE, "--bundle", B, "--out", OUT), "no prompt given"),
    ("object gap", ("segment", IMAGE, "--bundle", B, "--point", "1:10,10", "--out", OUT), "without gaps"),
    ("too many points", ("segment", IMAGE, "--bundle", B, *[a for i in range(9) for a in ("--point", f"{10 + i},10")],
                         "--out", OUT), "the bundle has 8"),
    ("auto grid 0", ("segment", IMAGE, "--bundle", B, "--auto", "--points-per-side", "0", "--out", OUT),
     "--points-per-side must be a whole number from 1"),
    ("auto threshold 2", ("segment", IMAGE, "--bundle", B, "--auto", "--pred-iou-thresh", "2", "--out", OUT),
     "--pred-iou-thresh must be between 0 and 1"),
    ("auto with points", ("segment", IMAGE, "--bundle", B, "--auto", "--point", "1,1", "--out", OUT),
     "give no --point or --box"),
    ("folder as image", ("segment", VIDEO, "--bundle", B, "--point", "1,1", "--out", OUT), "is a folder"),
    ("missing image", ("segment", "nope.jpg", "--bundle", B, "--point", "1,1", "--out", OUT), "does not exist"),
    ("undecodable image", ("segment", f"{S}/broken.png", "--bundle", B, "--point", "1,1", "--out", OUT),
     "cannot decode image"),
    ("segment out user folder", ("segment", IMAGE, "--bundle", B, "--point", "1,1", "--out", f"{S}/notes"),
     "is never replaced"),
    ("segment out with user files", ("segment", IMAGE, "--bundle", B, "--point", "1,1", "--out", f"{S}/segmented"),
     "also files it never wrote"),
    ("segment missing bundle", ("segment", IMAGE, "--bundle", "no/such", "--point", "1,1", "--out", OUT),
     "does not exist"),
    # track
    ("prompt past the end", ("track", VIDEO, "--bundle", B, "--point", "250:1:10,10", "--out", OUT),
     "a prompt is on frame 250"),
    ("track point outside", ("track", VIDEO, "--bundle", B, "--point", "0:1:5000,10", "--out", OUT),
     "outside the 960x540 frame"),
    ("track frame not a number", ("track", VIDEO, "--bundle", B, "--point", "x:1:10,10", "--out", OUT),
     "is not FRAME:OBJ:X,Y[,LABEL]"),
    ("track nan", ("track", VIDEO, "--bundle", B, "--point", "0:1:nan,10", "--out", OUT), "not a finite number"),
    ("track fractional label", ("track", VIDEO, "--bundle", B, "--point", "0:1:10,10,0.5", "--out", OUT),
     "the label must be 1"),
    ("track inverted box", ("track", VIDEO, "--bundle", B, "--box", "0:1:800,150,500,450", "--out", OUT),
     "with x1 > x0"),
    ("empty mask prompt", ("track", VIDEO, "--bundle", B, "--mask", f"0:1:{S}/empty-mask.png", "--out", OUT),
     "has no nonzero pixel"),
    ("mask without file", ("track", VIDEO, "--bundle", B, "--mask", "0:1", "--out", OUT), "is not FRAME:OBJ:PNG"),
    ("mask missing", ("track", VIDEO, "--bundle", B, "--mask", "0:1:missing.png", "--out", OUT), "does not exist"),
    ("mask of another size", ("track", VIDEO, "--bundle", B, "--mask", f"0:1:{S}/small-mask.png", "--out", OUT),
     "the mask is 100x100 but the video is 960x540"),
    ("mask with clicks", ("track", VIDEO, "--bundle", B, "--mask", f"0:1:{S}/mask.png", "--point", "0:1:5,5",
                          "--out", OUT), "a mask prompt stands alone"),
    ("negative fps", ("track", VIDEO, "--bundle", B, "--point", "0:1:10,10", "--fps", "-5", "--out", OUT),
     "--fps must be a frame rate above 0"),
    ("zero fps", ("track", VIDEO, "--bundle", B, "--point", "0:1:10,10", "--fps", "0", "--out", OUT),
     "--fps must be a frame rate above 0"),
    ("track no prompt", ("track", VIDEO, "--bundle", B, "--out", OUT), "no prompt given"),
    ("missing video", ("track", "nowhere", "--bundle", B, "--point", "0:1:10,10", "--out", OUT), "does not exist"),
    ("track out is a file", ("track", VIDEO, "--bundle", B, "--point", "0:1:10,10", "--out", f"{S}/file.txt"),
     "is a file, not a folder"),
    # bench
    ("objects not numbers", ("bench", "run", B, "--report", f"{S}/r.json", "--objects", "1,x"),
     "--objects '1,x' must be object counts"),
    ("zero objects bench", ("bench", "run", B, "--report", f"{S}/r.json", "--objects", "0"), "must be object counts"),
    ("too many objects bench", ("bench", "run", B, "--report", f"{S}/r.json", "--objects", "1,1000"),
     "object counts from 1 to 64"),
    ("zero runs", ("bench", "run", B, "--report", f"{S}/r.json", "--runs", "0"), "--runs must be from 1"),
    ("zero threads", ("bench", "run", B, "--report", f"{S}/r.json", "--threads", "0"), "--threads must be from 1 to 256"),
    ("100000 threads", ("bench", "run", B, "--report", f"{S}/r.json", "--threads", "100000"),
     "--threads must be from 1 to 256, got 100000"),
    ("video shorter than warm-up", ("bench", "run", B, "--report", f"{S}/r.json", "--video-frames", "3"),
     "--video-frames must be at least --warmup + 2"),
    ("bench report over a user file", ("bench", "run", B, "--report", f"{S}/user.json"),
     "'{sandbox}/user.json' exists and is not a report written by edgetam-export"),
    ("bench markdown over a user file", ("bench", "run", B, "--report", f"{S}/r.json", "--markdown",
                                         f"{S}/notes/notes.txt"), "is not a report written by edgetam-export"),
    ("bench report into a bundle", ("bench", "run", B, "--report", f"{B}/bench.json"), "lies inside the bundle"),
    # copy-bundle, sample-data
    ("copy into the bundle itself", ("copy-bundle", B, f"{B}/inner", "--any-backend"), "lies inside the bundle"),
    ("sample data from a non-URL", ("sample-data", "--out", OUT, "--base-url", "ftp.example/data"),
     "is not an http(s) or file URL"),
    ("sample data unreachable", ("sample-data", "--out", OUT, "--base-url", "http://127.0.0.1:9"), "cannot download"),
    ("sample data into a user folder", ("sample-data", "--out", f"{S}/notes"), "is never replaced"),
    ("bench unwritable report", ("bench", "run", B, "--report", f"{S}/file.txt/r.json"), "cannot write --report"),
    ("bench missing bundle", ("bench", "run", "no/such", "--report", f"{S}/r.json"), "does not exist"),
    ("import missing run", ("bench", "import", f"{S}/nope.json", "--report", f"{S}/r.json"), "does not exist"),
    # the command line itself
    ("unknown command", ("frobnicate",), "No such command 'frobnicate'"),
    ("missing argument", ("info",), "Missing argument 'bundle'"),
]


@pytest.mark.parametrize(("name", "args", "fragment"), CASES, ids=[case[0] for case in CASES])
def test_bad_input_is_one_line_and_touches_nothing(name, args, fragment, sandbox, data_dir, tiny_bundles):
    fill = {"sandbox": str(sandbox), "data": str(data_dir)}
    before = snapshot(sandbox, tiny_bundles["onnx-fp32"].path)
    result = cli(*(arg.format(**fill) for arg in args))
    assert_one_line_error(result, fragment.format(**fill))
    assert snapshot(sandbox, tiny_bundles["onnx-fp32"].path) == before
    assert not Path(OUT.format(**fill)).exists()


def test_catalogue_is_large_enough():
    """The issue asks for at least 40 bad inputs across every command; each command appears."""
    assert len(CASES) + len(API_CASES) >= 40
    assert {args[0] for _, args, _ in CASES} >= {"export", "verify", "info", "segment", "track", "bench"}


def _predictor(bundle):
    from edgetam_export.runtime import EdgeTamPredictor

    return EdgeTamPredictor.from_bundle(bundle)


def _session(bundle, data_dir):
    from edgetam_export.runtime.tracker import EdgeTamTracker

    frames = sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:3]
    return EdgeTamTracker.from_bundle(bundle).init_session([Image.open(p) for p in frames])


API_CASES = {
    "fractional label": (lambda b, d: _predictor(b).predict(_predictor(b).set_image(d / "images" / "truck.jpg"),
                                                            points=[[(500, 375)]], labels=[[0.5]]), "point labels"),
    "nan click": (lambda b, d: _predictor(b).predict(_predictor(b).set_image(d / "images" / "truck.jpg"),
                                                     points=[[(float("nan"), 3)]]), "not a finite number"),
    "box of 3 numbers": (lambda b, d: _predictor(b).predict(_predictor(b).set_image(d / "images" / "truck.jpg"),
                                                            boxes=[[1, 2, 3]]), "a box needs 4 numbers"),
    "image array of the wrong shape": (lambda b, d: _predictor(b).set_image(np.zeros((4, 4), np.uint8)),
                                       "must be HxWx3 uint8"),
    "tracker inverted box": (lambda b, d: _session(b, d).add_prompt(0, 1, box=(800, 150, 500, 450)), "x1 > x0"),
    "tracker label 3": (lambda b, d: _session(b, d).add_prompt(0, 1, points=[(5, 5)], labels=[3]), "point labels"),
    "tracker frame past the end": (lambda b, d: _session(b, d).add_prompt(7, 1, points=[(5, 5)]), "frame 7"),
    "tracker propagate with nothing": (lambda b, d: next(_session(b, d).propagate()), "nothing to propagate"),
    "mask generation grid 0": (lambda b, d: __import__("edgetam_export.runtime.automatic", fromlist=["x"])
                               .MaskGenerationSettings(points_per_crop=0), "--points-per-side"),
}


@pytest.mark.parametrize("name", list(API_CASES))
def test_python_api_bad_input_raises_one_clear_error(name, tiny_bundles, data_dir):
    call, fragment = API_CASES[name]
    with pytest.raises(EdgeTamExportError, match=".*") as caught:
        call(tiny_bundles["onnx-fp32"].path, data_dir)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_environment_is_offline():
    """The hub case above must answer at once from the offline check, never from a download."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
