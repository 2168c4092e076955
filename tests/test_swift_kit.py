"""EdgeTAMKit (`ios_demo/EdgeTAMKit`) builds and passes its own tests here, and reads the bundles this
toolkit exports: the Swift side recomputes their checksums (an `.onnx` file, `.mlpackage` folders) and
finds the same contracts. A missing Swift toolchain is a failure, never a skip."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from PIL import Image

from edgetam_export.bundle import Bundle, sha256_of
from edgetam_export.runtime.memory_bank import BankLayout, FrameMemory, pack_bank, select_memories
from edgetam_export.runtime.predictor import EdgeTamPredictor
from edgetam_export.runtime.processing import ObjectPrompt, pack_slots
from tests.recording import CallLog, recording
from edgetam_export.runtime.runners import load_runners
from edgetam_export.runtime.tracker import MASK_PROMPT_STAGE, TRACKING_STAGES, EdgeTamTracker
from edgetam_export.stages.spec import StageShapes, TrackingSettings

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "ios_demo" / "EdgeTAMKit"


@pytest.fixture(scope="module")
def python_fixtures(tiny_bundles, coreml_bundles, data_dir, tmp_path_factory) -> Path:
    """Copies of two exported bundles, each with what Python reads from it, for the Swift tests."""
    root = tmp_path_factory.mktemp("swift-fixtures")
    for kind, bundle in (("onnx", tiny_bundles["onnx-fp32"]), ("coreml", coreml_bundles["coreml-fp16"])):
        folder = root / kind
        shutil.copytree(bundle.path, folder / "bundle")
        expected = {
            "recipe": bundle.manifest.recipe.name,
            "manifest_sha256": sha256_of(bundle.path / "manifest.json"),
            "stages": {name: {"inputs": bundle.spec(name).input_names, "outputs": bundle.spec(name).output_names}
                       for name in bundle.stage_names},
        }
        (folder / "expected.json").write_text(json.dumps(expected))
    (root / "bank_cases.json").write_text(json.dumps(bank_cases()))
    (root / "prompt_cases.json").write_text(json.dumps(prompt_cases()))
    (root / "orientation_cases.json").write_text(json.dumps(orientation_cases()))
    record_image_session(tiny_bundles["onnx-fp32"], data_dir, root / "image_session")
    record_tracking_session(tiny_bundles["onnx-fp32"], data_dir, root / "tracking_session")
    return root


#: The tracking session both runtimes run on 30 frames of videos/bedroom: a click on frame 0, a box for a
#: second object on frame 10, a correction with a negative click, a mask drawn over a tracked frame, and a
#: reverse pass. (A second prompted frame per object would need a bundle with more memory slots.)
TRACKING_STEPS = [
    {"op": "prompt", "frame": 0, "object": 1, "clicks": [[0.5, 0.6, 1]]},
    {"op": "run", "frame": 0},
    {"op": "propagate", "start": 1, "max_frames": 8},
    {"op": "prompt", "frame": 10, "object": 2, "clicks": [], "box": [0.1, 0.2, 0.35, 0.7]},
    {"op": "run", "frame": 10},
    {"op": "propagate", "start": 11, "max_frames": 9},
    {"op": "prompt", "frame": 15, "object": 1, "clicks": [[0.5, 0.6, 1], [0.8, 0.3, 0]]},
    {"op": "run", "frame": 15},
    {"op": "propagate", "start": 16, "max_frames": 4},
    {"op": "mask", "frame": 20, "object": 2, "from_result": -1},
    {"op": "run", "frame": 20},
    {"op": "propagate", "start": 21, "max_frames": 8},
    {"op": "propagate", "start": 10, "max_frames": 10, "reverse": True},
]


def record_tracking_session(bundle: Bundle, data_dir: Path, folder: Path, frame_count: int = 30) -> None:
    """Run TRACKING_STEPS through the Python tracker, recording every stage call, the frames' RGB bytes, the
    mask prompt and every frame result (masks at the video's size, object scores)."""
    paths = sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:frame_count]
    frames = [Image.open(p).convert("RGB") for p in paths]
    width, height = frames[0].size
    (folder / "frames").mkdir(parents=True)
    for index, frame in enumerate(frames):
        (folder / "frames" / f"{index}.rgb").write_bytes(np.asarray(frame, dtype=np.uint8).tobytes())
    log = CallLog()
    runners = recording(load_runners(bundle, [*TRACKING_STAGES, MASK_PROMPT_STAGE]), log)
    session = EdgeTamTracker(bundle, runners).init_session(frames)
    results, steps = [], []
    (folder / "expected").mkdir()

    def keep(result) -> None:
        number = len(results)
        (folder / "expected" / f"{number}.bin").write_bytes(result.masks().astype(np.uint8).tobytes())
        results.append({"frame": result.frame_idx, "objects": result.obj_ids, "file": f"expected/{number}.bin",
                        "object_scores": result.object_score_logits.tolist()})
        kept_masks.append(result.masks())

    kept_masks: list[np.ndarray] = []
    for step in TRACKING_STEPS:
        step = dict(step)
        if step["op"] == "prompt":
            step["clicks"] = [[x * width, y * height, label] for x, y, label in step["clicks"]]
            step["box"] = [v * (width if i % 2 == 0 else height) for i, v in enumerate(step["box"])] if "box" in step else None
            session.add_prompt(step["frame"], step["object"], points=[c[:2] for c in step["clicks"]] or None,
                               labels=[c[2] for c in step["clicks"]] or None, box=step["box"])
        elif step["op"] == "mask":
            earlier = kept_masks[step["from_result"]]
            mask = earlier[results[step["from_result"]]["objects"].index(step["object"])].astype(np.uint8)
            (folder / "mask.bin").write_bytes(mask.tobytes())
            step["mask_file"] = "mask.bin"
            session.add_mask(step["frame"], step["object"], mask)
        elif step["op"] == "run":
            keep(session.run_frame(step["frame"]))
        else:
            for result in session.propagate(step["start"], step["max_frames"], reverse=step.get("reverse", False)):
                keep(result)
        steps.append(step)
    log.write(folder)
    (folder / "session.json").write_text(json.dumps({
        "width": width, "height": height, "frames": frame_count, "steps": steps, "results": results,
        "calls": len(log.calls), "max_objects": bundle.manifest.shapes.max_objects,
    }, indent=1))


def image_steps(sizes: dict[str, tuple[int, int]], max_objects: int) -> list[dict]:
    """The documented image examples as steps both runtimes run: clicks, negative clicks, a box, boxes with
    and without clicks (padding), refinement with a mask, single-mask output (stability fallback), and more
    objects than one decoder call holds. Coordinates are fractions of the picture, made pixels here."""

    def at(picture: str, fx: float, fy: float) -> list[float]:
        width, height = sizes[picture]
        return [round(fx * width, 1), round(fy * height, 1)]

    def box(picture: str, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return at(picture, x0, y0) + at(picture, x1, y1)

    return [
        {"picture": "cars.jpg", "objects": [{"clicks": [at("cars.jpg", 0.5, 0.55) + [1]]}]},
        {"picture": "cars.jpg", "objects": [{"clicks": [at("cars.jpg", 0.5, 0.55) + [1], at("cars.jpg", 0.2, 0.8) + [0]]}]},
        {"picture": "cars.jpg", "objects": [{"clicks": [at("cars.jpg", 0.45, 0.5) + [1]]}], "mask_from_step": 0},
        {"picture": "truck.jpg", "objects": [{"clicks": [], "box": box("truck.jpg", 0.05, 0.2, 0.95, 0.7)}]},
        {"picture": "truck.jpg", "objects": [
            {"clicks": [], "box": box("truck.jpg", 0.05, 0.2, 0.95, 0.7)},
            {"clicks": [at("truck.jpg", 0.3, 0.6) + [0]], "box": box("truck.jpg", 0.25, 0.5, 0.4, 0.75)},
        ]},
        {"picture": "groceries.jpg", "multimask": False, "objects": [
            {"clicks": [at("groceries.jpg", 0.2, 0.3) + [1]]},
            {"clicks": [at("groceries.jpg", 0.5, 0.5) + [1], at("groceries.jpg", 0.6, 0.5) + [1]]},
            {"clicks": [at("groceries.jpg", 0.8, 0.7) + [1], at("groceries.jpg", 0.9, 0.9) + [0],
                        at("groceries.jpg", 0.7, 0.6) + [1]]},
        ]},
        {"picture": "groceries.jpg", "objects": [
            {"clicks": [at("groceries.jpg", (i + 0.5) / (max_objects + 1), 0.5) + [1]]} for i in range(max_objects + 1)
        ]},
    ]


def record_image_session(bundle: Bundle, data_dir: Path, folder: Path) -> None:
    """Run the image steps through the Python runtime, recording every stage call, the pictures' RGB bytes
    and each step's masks and scores: the golden session EdgeTAMKit replays."""
    pictures = {name: Image.open(data_dir / "images" / name).convert("RGB")
                for name in ("cars.jpg", "truck.jpg", "groceries.jpg")}
    (folder / "pictures").mkdir(parents=True)
    for name, picture in pictures.items():
        (folder / "pictures" / f"{name}.rgb").write_bytes(np.asarray(picture, dtype=np.uint8).tobytes())
    log = CallLog()
    predictor = EdgeTamPredictor(bundle, recording(load_runners(bundle, ["image_encoder", "prompt_decoder"]), log))
    steps = image_steps({n: p.size for n, p in pictures.items()}, bundle.manifest.shapes.max_objects)
    embedding, shown, results = None, None, []
    (folder / "expected").mkdir()
    for number, step in enumerate(steps):
        if step["picture"] != shown:
            embedding, shown = predictor.set_image(pictures[step["picture"]]), step["picture"]
        objects = step["objects"]
        has_boxes = "box" in objects[0]
        mask_input = None
        if "mask_from_step" in step:
            earlier = results[step["mask_from_step"]].ranked()
            mask_input = earlier.low_res_logits[:1, :1]
        prediction = predictor.predict(
            embedding,
            points=[[c[:2] for c in o["clicks"]] for o in objects] if any(o["clicks"] for o in objects) else None,
            labels=[[c[2] for c in o["clicks"]] for o in objects] if any(o["clicks"] for o in objects) else None,
            boxes=[o["box"] for o in objects] if has_boxes else None,
            mask_input=mask_input, multimask_output=step.get("multimask", True),
        )
        results.append(prediction)
        (folder / "expected" / f"{number}-masks.bin").write_bytes(prediction.masks.astype(np.uint8).tobytes())
        step["expected"] = {
            "masks_shape": list(prediction.masks.shape), "masks_file": f"expected/{number}-masks.bin",
            "scores": prediction.scores.tolist(), "object_scores": prediction.object_score_logits.tolist(),
        }
    log.write(folder)
    (folder / "session.json").write_text(json.dumps({
        "pictures": {name: {"width": p.width, "height": p.height, "file": f"pictures/{name}.rgb"}
                     for name, p in pictures.items()},
        "steps": steps, "calls": len(log.calls),
    }, indent=1))


def orientation_cases() -> list[dict]:
    """A 5x3 picture stored under each EXIF orientation, and the upright picture Pillow's `exif_transpose` shows."""
    from PIL import ImageOps

    stored = np.random.default_rng(7).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    cases = []
    for orientation in range(1, 9):
        picture = Image.fromarray(stored)
        exif = Image.Exif()
        exif[0x0112] = orientation
        picture.info["exif"] = exif.tobytes()
        shown = np.asarray(ImageOps.exif_transpose(picture))
        cases.append({"orientation": orientation, "stored": stored.flatten().tolist(), "width": 5, "height": 3,
                      "shown": shown.flatten().tolist(), "shown_width": shown.shape[1], "shown_height": shown.shape[0]})
    return cases


def bank_cases() -> list[dict]:
    """Memory-bank selections of the Python runtime for sessions a tracker meets: windows filling up,
    reverse passes, corrections, and more prompted frames than `max_cond_frame_num` admits."""
    shapes = StageShapes(image_size=256, hidden_size=4, memory_dim=2, memory_tokens=1, point_slots=8, max_objects=4,
                         memory_slots=9, pointer_slots=20, temporal_encodings=7, pointer_temporal_encoding=True)
    layout = BankLayout.from_shapes(shapes)
    settings = TrackingSettings()  # 16 pointers, as EdgeTAM; the 20 slots also fit several prompted frames

    def stored(frame: int, conditioning: bool) -> FrameMemory:
        # The frame and where it is stored are readable from what is packed.
        marker = np.float32(frame + (0.5 if conditioning else 0.0))
        return FrameMemory(np.zeros((1, 1), np.float32), 1.0, np.full(4, marker), np.full((1, 2), marker),
                           np.zeros((1, 2), np.float32))

    cases = []
    for conditioning, tracked, frame, reverse, max_cond, frames in [
        ([0], range(1, 3), 3, False, -1, 200),
        ([0], range(1, 40), 40, False, -1, 200),
        ([100], range(101, 110), 95, True, -1, 200),
        ([100], range(90, 100), 89, True, -1, 200),
        ([0, 20, 35], [*range(1, 20), *range(21, 35), *range(36, 50)], 50, False, 2, 60),
        ([10, 20, 35], [*range(11, 20), *range(21, 35)], 12, False, 1, 60),
        ([0, 5], range(1, 5), 6, False, 2, 8),
        ([10, 20, 35, 40, 50], [*range(21, 25)], 25, False, 1, 60),  # transformers' negative slice keeps 4
    ]:
        memories, pointers, most = select_memories(
            {t: stored(t, True) for t in conditioning}, {t: stored(t, False) for t in tracked}, frame, reverse, layout,
            dataclasses.replace(settings, max_cond_frame_num=max_cond), frames,
        )
        bank = pack_bank(layout, memories, pointers, most)
        cases.append({
            "conditioning": conditioning, "tracked": list(tracked), "frame": frame, "reverse": reverse,
            "max_cond": max_cond, "frames": frames, "shapes": shapes.to_json(),
            "memory_markers": [float(m.features[0, 0]) for m in memories],
            "time_rows": [m.time_row for m in memories],
            "pointer_markers": [float(p.vector[0]) for p in pointers],
            "distances": [p.distance for p in pointers],
            "max_pointers": most,
            "pointer_time_offset": bank["pointer_time_offset"].tolist(),
        })
    return cases


def prompt_cases() -> list[dict]:
    """Decoder prompt slots the Python runtime packs for clicks and boxes (picture 1800x1200, model 1024)."""
    prompts = [
        ObjectPrompt(np.array([[500, 375]], np.float32), np.array([1], np.int32)),
        ObjectPrompt(np.array([[500, 375], [1125, 625]], np.float32), np.array([1, 0], np.int32)),
        ObjectPrompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32), np.array([75, 275, 1725, 850], np.float32)),
        ObjectPrompt(np.array([[575, 750]], np.float32), np.array([0], np.int32), np.array([425, 600, 700, 875],
                                                                                              np.float32)),
    ]
    coords, labels = pack_slots(prompts, 8, 1024 / 1800, 1024 / 1200)
    return [{
        "clicks": [[float(x), float(y), int(label)] for (x, y), label in zip(p.points, p.labels)],
        "box": None if p.box is None else [float(v) for v in p.box],
        "coords": coords[i].tolist(), "labels": labels[i].tolist(),
    } for i, p in enumerate(prompts)]


def swift() -> str:
    found = shutil.which("swift")
    assert found, "the Swift toolchain is missing: install Swift 6 (EdgeTAMKit is built and tested on Linux too)"
    return found


def test_swift_package_builds_and_passes_its_tests_on_python_bundles(python_fixtures, tmp_path):
    build = subprocess.run([swift(), "build", "--package-path", str(KIT)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    env = os.environ | {"EDGETAM_PYTHON_FIXTURES": str(python_fixtures)}
    tested = subprocess.run([swift(), "test", "--package-path", str(KIT)], capture_output=True, text=True, env=env,
                            timeout=900)
    output = tested.stdout + tested.stderr
    print(output[-3000:])
    assert tested.returncode == 0, output[-6000:]
    # The tests that read Python's bundles ran (they are switched off without the fixtures), for both kinds.
    for test in ("readsWhatPythonWrote(kind:)", "bankSelectionsMatchPython()", "promptSlotsMatchPython()",
                 "replaysThePythonImageSession()", "replaysThePythonTrackingSession()"):
        assert re.search(rf"Test {re.escape(test)} (with \d+ test cases )?passed", output), output[-3000:]
    if sys.platform == "darwin":  # the real Core ML runner on the tiny coreml-fp16 bundle (.github/workflows/apple.yml)
        for test in ("imageSessionMatchesPythonThroughCoreML()", "trackingSessionMatchesPythonThroughCoreML()"):
            assert re.search(rf"Test {re.escape(test)} passed", output), output[-3000:]
    # swift-testing 6.3 says "Test run with N tests in M suites passed", 6.1 (Xcode 16.4) "Test run with N tests passed".
    summary = re.search(r"Test run with (\d+) tests? (?:in \d+ suites? )?passed", output)
    assert summary and int(summary.group(1)) >= 16, output[-2000:]
    # The device benchmark JSON the app shares, written by the Swift code, is what `bench import` accepts.
    results = tmp_path / "results.json"
    shutil.copy(REPO / "benchmarks" / "results" / "cpu-2core-full.json", results)
    imported = subprocess.run([sys.executable, "-m", "edgetam_export", "bench", "import",
                               str(python_fixtures / "device_run.json"), "--report", str(results),
                               "--markdown", str(tmp_path / "REPORT.md")], capture_output=True, text=True)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    run = json.loads(results.read_text())["device_runs"][-1]
    assert run["runtime"]["compute_units"] == "all" and {s["stage"] for s in run["stages"]} == {
        "image_encoder", "prompt_decoder", "memory_encoder", "memory_attention"}
    assert [v["objects"] for v in run["video"]] == [1, 2] and "Linux-test" in (tmp_path / "REPORT.md").read_text()
