"""Exit codes a CI can trust, run as a user runs the commands: a failed parity check exits 1, Ctrl-C exits 130
and leaves nothing at --out and the previous output untouched."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_catalogue import snapshot
from tests.test_cli import cli


def test_verify_exits_1_when_the_bundle_fails_parity(tiny_bundles, data_dir, tmp_path):
    """The bundle checked against other weights (seed 5 instead of 0): FAILED, passed false, exit 1."""
    report = tmp_path / "parity.json"
    result = cli("verify", str(tiny_bundles["onnx-fp32"].path), "--seed", "5", "--data", str(data_dir),
                 "--report", str(report))
    assert result.returncode == 1, result.stderr
    assert "FAILED:" in result.stderr and "Traceback" not in result.stderr
    written = json.loads(report.read_text())
    assert written["passed"] is False and written["written_by"] == "edgetam-export verify"


def interrupted(args: list[str], marker: str) -> tuple[int, str]:
    """Run the CLI, send SIGINT once `marker` appears on stderr (the command is then mid-work), return (code, stderr)."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "edgetam_export", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    seen = []
    for line in process.stderr:
        seen.append(line)
        if marker in line:
            break
    else:
        process.wait()
        pytest.fail(f"'{marker}' never appeared: {''.join(seen)}")
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=300)
    return process.returncode, "".join(seen) + rest


@pytest.fixture(scope="module")
def earlier_outputs(tiny_bundles, data_dir, tmp_path_factory) -> Path:
    """An earlier bundle, segmentation and tracking result that an interrupted re-run must leave as they are."""
    root = tmp_path_factory.mktemp("earlier")
    bundle = tiny_bundles["onnx-fp32"].path
    shutil.copytree(bundle, root / "bundle")
    frames = root / "frames"
    frames.mkdir()
    for frame in sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:40]:
        shutil.copy(frame, frames / frame.name)
    image = str(data_dir / "images" / "truck.jpg")
    assert cli("segment", image, "--bundle", str(bundle), "--point", "500,375", "--out", str(root / "segmented")
               ).returncode == 0
    assert cli("track", str(frames), "--bundle", str(bundle), "--point", "39:1:210,350", "--out", str(root / "tracked")
               ).returncode == 0
    return root


@pytest.mark.parametrize("command", ["export", "verify", "segment --auto", "track"])
def test_ctrl_c_exits_130_and_leaves_the_earlier_output(command, earlier_outputs, tiny_bundles, data_dir):
    root, bundle = earlier_outputs, str(tiny_bundles["onnx-fp32"].path)
    args, marker, out = {
        "export": (["export", "--size", "tiny", "--recipe", "onnx-fp32", "--max-objects", "4", "--data", str(data_dir),
                    "--force", "--out", str(root / "bundle")], "torch.export", root / "bundle"),
        "verify": (["verify", bundle, "--data", str(data_dir), "--report", str(root / "parity.json")], "parity: case",
                   root / "parity.json"),
        "segment --auto": (["segment", str(data_dir / "images" / "truck.jpg"), "--bundle", bundle, "--auto",
                            "--out", str(root / "segmented")], "segment: prompts", root / "segmented"),
        "track": (["track", str(root / "frames"), "--bundle", bundle, "--point", "0:1:210,350",
                   "--out", str(root / "tracked")], "track: frame", root / "tracked"),
    }[command]
    before = snapshot(root)
    code, stderr = interrupted(args, marker)
    assert code == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert snapshot(root) == before, f"{command} changed files when interrupted"
    assert not list(out.parent.glob(f".{out.name}.*")), "a staging folder was left behind"
