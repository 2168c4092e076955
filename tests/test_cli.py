"""The CLI as a user runs it: real subprocesses, exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
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
    out = tmp_path / "models" / "edgetam-onnx"
    exported = cli(
        "export", "--model", "random", "--seed", "0", "--size", "tiny", "--recipe", "onnx-fp32",
        "--max-objects", "2", "--out", str(out), "--data", str(data_dir),
    )
    assert exported.returncode == 0, exported.stderr
    assert "parity passed" in exported.stdout
    assert (out / "manifest.json").is_file()

    report = tmp_path / "parity.json"
    verified = cli("verify", str(out), "--report", str(report), "--data", str(data_dir))
    assert verified.returncode == 0, verified.stderr
    assert "memory_attention" in verified.stdout and "passed:" in verified.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["summary"]["prompt_decoder"]["min_mask_iou"] >= 0.99

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
        (("export", "--size", "huge"), "unknown model size 'huge'"),
        (("export", "--max-objects", "0"), "--max-objects must be at least 1"),
        (("info", "no/such/bundle"), "does not exist"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, fragment):
    assert_one_line_error(cli(*args), fragment)


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
