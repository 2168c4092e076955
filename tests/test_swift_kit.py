"""EdgeTAMKit (`ios_demo/EdgeTAMKit`) builds and passes its own tests here, and reads the bundles this
toolkit exports: the Swift side recomputes their checksums (an `.onnx` file, `.mlpackage` folders) and
finds the same contracts. A missing Swift toolchain is a failure, never a skip."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edgetam_export.bundle import sha256_of

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
    return root


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
    assert re.search(r"Test readsWhatPythonWrote\(kind:\) passed", output), output[-3000:]
    summary = re.search(r"Test run with (\d+) tests? in \d+ suites? passed", output)
    assert summary and int(summary.group(1)) >= 16, output[-2000:]
