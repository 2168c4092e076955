"""No user file is ever lost: outputs are written whole or not at all, replace only our own output,
survive SIGTERM, clean up after killed runs, and get the permissions the umask asks for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgetam_export import safe_output
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.export import export_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.safe_output import SEGMENTATION, STAGING_MARKER, remove_stale_staging, staged_output
from tests.test_cli import cli


def _segmentation(folder: Path, tag: str) -> None:
    (folder / "masks").mkdir(exist_ok=True)
    (folder / "masks" / "0_0.png").write_text(tag)
    (folder / "result.json").write_text(json.dumps({"mode": tag, "masks": [{"file": "masks/0_0.png"}]}))


def test_export_never_replaces_what_is_not_a_bundle(tiny_reference, tmp_path):
    recipe = load_recipe("onnx-fp32").with_shapes(max_objects=2)
    notes = tmp_path / "P"
    notes.mkdir()
    (notes / "notes.txt").write_text("hi")
    models = tmp_path / "models"
    (models / "a-bundle").mkdir(parents=True)
    (models / "a-bundle" / "manifest.json").write_text(json.dumps({"format_version": 1, "stages": {}}))
    single = tmp_path / "somefile.txt"
    single.write_text("data")
    for target, message in ((notes, "is never replaced"), (models, "is never replaced"), (single, "is a file")):
        for overwrite in (False, True):
            with pytest.raises(EdgeTamExportError, match=message):
                export_bundle(tiny_reference, recipe, target, overwrite=overwrite)
    assert (notes / "notes.txt").read_text() == "hi" and single.read_text() == "data"
    assert (models / "a-bundle" / "manifest.json").is_file()


def test_sigterm_during_export_leaves_nothing_behind(tmp_path, data_dir):
    out = tmp_path / "bundle"
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "edgetam_export", "export", "--size", "tiny", "--recipe", "onnx-fp32",
         "--max-objects", "2", "--data", str(data_dir), "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    deadline = time.monotonic() + 300
    staging = []
    while time.monotonic() < deadline and process.poll() is None:
        staging = [p for p in tmp_path.glob(".bundle.*.partial") if any(p.glob("*.onnx"))]
        if staging:
            break
        time.sleep(0.2)
    assert staging, "the export never started writing its first artifact"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_a_killed_run_is_cleaned_up_by_the_next_one(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    stale = tmp_path / ".out.abc123.partial"
    stale.mkdir()
    (stale / STAGING_MARKER).write_text(f"{dead_pid}\n")
    (stale / "image_encoder.onnx").write_bytes(b"x" * 1000)
    running = tmp_path / ".out.def456.partial"
    running.mkdir()
    (running / STAGING_MARKER).write_text(f"{os.getppid()}\n")  # a live process: its work is left alone
    foreign = tmp_path / ".out.ghi789.partial"  # no marker: not ours
    foreign.mkdir()
    with staged_output(tmp_path / "out", SEGMENTATION) as staging:
        _segmentation(staging, "new")
    assert not stale.exists() and running.exists() and foreign.exists()
    assert json.loads((tmp_path / "out" / "result.json").read_text())["mode"] == "new"
    assert remove_stale_staging(tmp_path / "out") == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_output_folders_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        with staged_output(tmp_path / "out", SEGMENTATION) as staging:
            _segmentation(staging, "x")
            safe_output.write_text_atomic(staging / "result.json", json.dumps({"mode": "x", "masks": []}))
    finally:
        os.umask(previous)
    assert (tmp_path / "out").stat().st_mode & 0o777 == mode
    assert (tmp_path / "out" / "result.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_replacing_is_one_atomic_exchange_and_failure_keeps_the_old_output(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _segmentation(out, "old")
    swaps = []
    exchange = safe_output._exchange
    monkeypatch.setattr(safe_output, "_exchange", lambda a, b: swaps.append((a, b)) or exchange(a, b))
    with pytest.raises(RuntimeError, match="half way"), staged_output(out, SEGMENTATION) as staging:
        _segmentation(staging, "new")
        raise RuntimeError("half way")
    assert json.loads((out / "result.json").read_text())["mode"] == "old" and swaps == []
    with staged_output(out, SEGMENTATION) as staging:
        _segmentation(staging, "new")
    assert len(swaps) == 1 and swaps[0][1] == out
    assert json.loads((out / "result.json").read_text())["mode"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or previous copy left


def test_exchange_swaps_two_folders(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from-a").touch()
    (b / "from-b").touch()
    assert safe_output._exchange(a, b)  # renameat2(RENAME_EXCHANGE) on Linux, renamex_np(RENAME_SWAP) on macOS
    assert [p.name for p in a.iterdir()] == ["from-b"] and [p.name for p in b.iterdir()] == ["from-a"]


def test_without_an_exchange_the_old_output_stays_until_the_new_one_is_in_place(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    _segmentation(out, "old")
    monkeypatch.setattr(safe_output, "_exchange", lambda a, b: False)  # a file system that cannot swap
    with staged_output(out, SEGMENTATION) as staging:
        _segmentation(staging, "new")
    assert json.loads((out / "result.json").read_text())["mode"] == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_segment_rerun_leaves_only_its_own_files(tiny_bundles, data_dir, tmp_path):
    image, bundle, out = data_dir / "images" / "truck.jpg", str(tiny_bundles["onnx-fp32"].path), tmp_path / "seg"
    first = cli("segment", str(image), "--bundle", bundle, "--point", "500,375", "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert len(list((out / "masks").iterdir())) == 3
    second = cli("segment", str(image), "--bundle", bundle, "--box", "75,275,1725,850", "--box", "425,600,700,875",
                 "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["0_0.png", "1_0.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]
