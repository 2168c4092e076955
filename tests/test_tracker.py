"""Video tracking on bundles reproduces transformers' EdgeTamVideoModel on all 200 frames of the clip."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.tracker import EdgeTamTracker
from edgetam_export.verification.tracking_parity import SCRIPTS, compare_tracking

MIN_IOU = 0.99
#: fp32 bundles reproduce the reference's low-resolution mask logits (peak: their largest magnitude).
MIN_LOGIT_PSNR_DB = 60.0


@pytest.fixture(scope="module")
def frames(data_dir):
    paths = sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))
    assert len(paths) == 200
    return [Image.open(p).convert("RGB") for p in paths]


#: Every script on ONNX Runtime; on ExecuTorch the one with a correction and a reverse pass (stages are proven
#: equal to the reference at export for every backend; the host-side logic is the same for all).
SESSIONS = [("onnx-fp32", script) for script in SCRIPTS] + [("executorch-xnnpack-fp32", "reverse-and-correction")]


@pytest.mark.parametrize(("backend", "script"), SESSIONS)
def test_tracking_matches_the_video_model(tiny_reference, tiny_bundles, frames, backend, script):
    tracker = EdgeTamTracker.from_bundle(tiny_bundles[backend].path)
    parity = compare_tracking(tiny_reference, tracker, frames, SCRIPTS[script])
    assert parity.min_iou >= MIN_IOU, parity.to_json()["per_frame"][:3]
    # Not only the binary masks: the logits, the object scores and the presence decisions agree too.
    assert parity.min_logit_psnr >= MIN_LOGIT_PSNR_DB and parity.max_score_difference < 1e-3
    assert parity.presence_agreement == 1.0
    tracked_frames = set(parity.frames)
    if script == "one-object":
        assert tracked_frames == set(range(200))
    if script == "three-objects-on-different-frames":
        assert max(len(entry) for entry in parity.ious) == 3 and 199 in tracked_frames
    # Masks of a realistic size (5-60% of the frame), so that a wrong memory would change them.
    assert 0.05 <= parity.median_area <= 0.60, parity.median_area


@pytest.mark.parametrize("fault", ["stale memory", "time rows off by one"])
def test_tracking_parity_catches_a_wrong_memory_bank(tiny_reference, tiny_bundles, frames, monkeypatch, fault):
    """With masks of a realistic size, a tracker whose memory bank is slightly wrong fails the parity gates:
    one missing recent memory, or memories given the temporal encoding of the neighbouring frame."""
    import dataclasses

    import edgetam_export.runtime.tracker as tracker_module
    from edgetam_export.runtime.memory_bank import select_memories

    def wrong(*args, **kwargs):
        memories, pointers, most = select_memories(*args, **kwargs)
        if fault == "stale memory":
            return memories[:-1], pointers, most
        return [dataclasses.replace(m, time_row=max(m.time_row - 1, 0)) for m in memories], pointers, most

    monkeypatch.setattr(tracker_module, "select_memories", wrong)
    tracker = EdgeTamTracker.from_bundle(tiny_bundles["onnx-fp32"].path)
    parity = compare_tracking(tiny_reference, tracker, frames[:20], SCRIPTS["one-object"])
    assert 0.05 <= parity.median_area <= 0.60
    assert parity.min_logit_psnr < MIN_LOGIT_PSNR_DB or parity.min_iou < MIN_IOU, parity.to_json()["min_logit_psnr_db"]


def test_memory_is_bounded_and_objects_are_batched(tiny_bundles, frames, monkeypatch):
    tracker = EdgeTamTracker.from_bundle(tiny_bundles["onnx-fp32"].path)
    calls = {"memory_attention": 0, "prompt_decoder": 0}
    original = tracker.stages.run_batched

    def counting(stage, inputs):
        if stage in calls:
            calls[stage] += 1
        return original(stage, inputs)

    monkeypatch.setattr(tracker.stages, "run_batched", counting)
    session = tracker.init_session(frames[:60], memory_window=16)
    for obj in range(3):
        session.add_prompt(0, obj, points=[(200 + 150 * obj, 300)])
        session.run_frame(0)
    calls.update(memory_attention=0, prompt_decoder=0)
    results = list(session.propagate(1))
    assert len(results) == 59 and results[-1].mask_logits.shape[0] == 3
    # One call per stage per frame for all three objects together.
    assert calls == {"memory_attention": 59, "prompt_decoder": 59}
    for obj in session.objects.values():
        anchors = [59, *obj.conditioning]
        assert all(min(abs(t - a) for a in anchors) <= 16 for t in obj.tracked)
        assert len(obj.tracked) <= 2 * 16 + 1


def test_bad_video_input_is_one_clear_error(tiny_bundles, frames, tmp_path, data_dir):
    tracker = EdgeTamTracker.from_bundle(tiny_bundles["onnx-fp32"].path)
    session = tracker.init_session(frames[:10])
    with pytest.raises(EdgeTamExportError, match="frame 10 does not exist"):
        session.add_prompt(10, 1, points=[(10, 10)])
    with pytest.raises(EdgeTamExportError, match="outside the 960x540 frame"):
        session.add_prompt(0, 1, points=[(1000, 10)])
    with pytest.raises(EdgeTamExportError, match="no objects to track"):
        session.run_frame(0)
    with pytest.raises(EdgeTamExportError, match="nothing to propagate"):
        list(session.propagate())
    small = tracker.init_session(frames[:2], memory_window=None)
    small.add_prompt(0, 1, points=[(10, 10)])
    small.add_prompt(0, 2, points=[(20, 10)])
    # As in transformers, only the latest add_prompt counts as new: object 1 was never run.
    with pytest.raises(EdgeTamExportError, match="object 1 has no prompted frame yet"):
        small.run_frame(0)
    limited = EdgeTamTracker(tracker.bundle, tracker.runners, max_tracked_objects=1).init_session(frames[:2])
    limited.add_prompt(0, 1, points=[(10, 10)])
    with pytest.raises(EdgeTamExportError, match="holds at most 1"):
        limited.add_prompt(0, 2, points=[(10, 10)])

    with pytest.raises(EdgeTamExportError, match="the mask is 100x50 but the video is 960x540"):
        session.add_mask(0, 1, np.ones((50, 100), bool))
    without_stage = {k: v for k, v in tracker.runners.items() if k != "mask_prompt_encoder"}
    with pytest.raises(EdgeTamExportError, match="has no mask_prompt_encoder stage .* re-export"):
        EdgeTamTracker(tracker.bundle, without_stage).init_session(frames[:2]).add_mask(0, 1, np.ones((540, 960)))

    folder = tmp_path / "frames"
    folder.mkdir()
    frames[0].save(folder / "00000.jpg")
    frames[1].resize((480, 270)).save(folder / "00001.jpg")
    (folder / "00002.jpg").write_bytes(b"broken")
    mixed = tracker.init_session(folder)
    with pytest.raises(EdgeTamExportError, match="frame 1 is 480x270 but the video is 960x540"):
        mixed.frames.frame(1)
    with pytest.raises(EdgeTamExportError, match="frame 2 .* cannot be decoded"):
        mixed.frames.frame(2)
    with pytest.raises(EdgeTamExportError, match="does not exist"):
        tracker.init_session(tmp_path / "missing")


def test_onnx_runtime_runs_without_torch_or_transformers(tiny_bundles, data_dir, tmp_path):
    """An app-side install (`pip install edgetam-export`, no [export] extra) has neither torch nor
    transformers: image prediction, tracking with mask prompts, and the segment / track / info commands
    run an ONNX bundle without them; verify says in one line that it needs the extra."""
    import subprocess
    import sys

    bundle = str(tiny_bundles["onnx-fp32"].path)
    script = f"""
import sys
for blocked in ("torch", "torchvision", "transformers", "executorch", "coremltools", "onnx", "matplotlib"):
    sys.modules[blocked] = None  # any import of these now fails
import numpy as np
from edgetam_export.runtime import EdgeTamPredictor
from edgetam_export.runtime.tracker import EdgeTamTracker
session = EdgeTamTracker.from_bundle({bundle!r}).init_session({str(data_dir / "videos" / "bedroom")!r})
mask = np.zeros((540, 960), bool)
mask[200:400, 300:500] = True
session.add_mask(0, 1, mask)
session.run_frame(0)
session.add_prompt(0, 2, points=[(700, 300)])
session.run_frame(0)
results = list(session.propagate(1, 2))
predictor = EdgeTamPredictor.from_bundle({bundle!r})
predictor.predict(predictor.set_image({str(data_dir / "images" / "truck.jpg")!r}), points=[[[500, 375]]])
assert not any(name.startswith("edgetam_export.backends") for name in sys.modules)
print(len(results), results[-1].masks().shape)
from edgetam_export.cli import main
sys.argv = ["edgetam-export", *sys.argv[1:]]
main()
"""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)

    segmented = run("segment", str(data_dir / "images" / "truck.jpg"), "--bundle", bundle, "--point", "500,375",
                    "--out", str(tmp_path / "seg"))
    assert segmented.returncode == 0, segmented.stderr
    assert segmented.stdout.split()[:4] == ["3", "(2,", "540,", "960)"] and (tmp_path / "seg" / "result.json").is_file()
    tracked = run("track", str(data_dir / "videos" / "bedroom"), "--bundle", bundle, "--point", "195:1:210,350",
                  "--out", str(tmp_path / "track"))
    assert tracked.returncode == 0, tracked.stderr
    assert len(list((tmp_path / "track" / "masks" / "1").iterdir())) == 5
    assert run("info", bundle).returncode == 0
    verified = run("verify", bundle)
    assert verified.returncode == 2 and "Traceback" not in verified.stderr
    assert "pip install 'edgetam-export[export]'" in verified.stderr
