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
from pathlib import Path

import numpy as np
import pytest

from edgetam_export.bundle import sha256_of
from edgetam_export.runtime.memory_bank import BankLayout, FrameMemory, pack_bank, select_memories
from edgetam_export.runtime.processing import ObjectPrompt, pack_slots
from edgetam_export.stages.spec import StageShapes, TrackingSettings

KIT = Path(__file__).resolve().parent.parent / "ios_demo" / "EdgeTAMKit"


@pytest.fixture(scope="module")
def python_fixtures(tiny_bundles, coreml_bundles, tmp_path_factory) -> Path:
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
    return root


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


def test_swift_package_builds_and_passes_its_tests_on_python_bundles(python_fixtures):
    build = subprocess.run([swift(), "build", "--package-path", str(KIT)], capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-4000:]
    env = os.environ | {"EDGETAM_PYTHON_FIXTURES": str(python_fixtures)}
    tested = subprocess.run([swift(), "test", "--package-path", str(KIT)], capture_output=True, text=True, env=env,
                            timeout=900)
    output = tested.stdout + tested.stderr
    print(output[-3000:])
    assert tested.returncode == 0, output[-6000:]
    # The tests that read Python's bundles ran (they are switched off without the fixtures), for both kinds.
    for test in ("readsWhatPythonWrote(kind:)", "bankSelectionsMatchPython()", "promptSlotsMatchPython()"):
        assert re.search(rf"Test {re.escape(test)} (with \d+ test cases )?passed", output), output[-3000:]
    summary = re.search(r"Test run with (\d+) tests? in \d+ suites? passed", output)
    assert summary and int(summary.group(1)) >= 16, output[-2000:]
