"""The iOS demo's pieces that live outside Swift: `copy-bundle` (how a bundle gets into the app), and the
consistency of the app's XcodeGen project, the Swift packages, the macOS workflow and the README, which the
Linux CI cannot build (the macOS workflow does)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from edgetam_export.bundle import read_bundle, sha256_of

from tests.test_cli import assert_one_line_error, cli

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "ios_demo" / "EdgeTAMDemo"
WORKFLOW = REPO / ".github" / "workflows" / "apple.yml"


def test_copy_bundle_puts_a_verified_bundle_into_the_app(coreml_bundles, tmp_path):
    source = coreml_bundles["coreml-fp16"]
    dest = tmp_path / "EdgeTAMDemo" / "Bundle"
    done = cli("copy-bundle", str(source.path), str(dest))
    assert done.returncode == 0, done.stderr
    assert "checksums verified" in done.stdout
    copied = read_bundle(dest)
    assert copied.manifest == source.manifest and sha256_of(dest / "manifest.json") == sha256_of(source.path / "manifest.json")
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        ["manifest.json", "README.md", *(r.artifact for r in source.manifest.stages.values())])  # the model card too
    assert (dest / "README.md").read_text() == (source.path / "README.md").read_text()
    # Copying again needs --force, which replaces the bundle (and only a bundle).
    assert_one_line_error(cli("copy-bundle", str(source.path), str(dest)), "--force")
    assert cli("copy-bundle", str(source.path), str(dest), "--force").returncode == 0
    assert [p.name for p in dest.parent.iterdir()] == ["Bundle"]  # no staging folder left behind


def test_copy_bundle_refuses_what_the_app_cannot_run_or_must_not_overwrite(coreml_bundles, tiny_bundles, tmp_path):
    onnx = tiny_bundles["onnx-fp32"].path
    assert_one_line_error(cli("copy-bundle", str(onnx), str(tmp_path / "a")), "the iOS demo runs coreml and executorch bundles")
    assert cli("copy-bundle", str(onnx), str(tmp_path / "a"), "--any-backend").returncode == 0
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    assert_one_line_error(cli("copy-bundle", str(coreml_bundles["coreml-fp16"].path), str(notes), "--force"), "notes")
    assert (notes / "todo.txt").read_text() == "mine"
    tampered = tmp_path / "tampered"
    shutil.copytree(coreml_bundles["coreml-fp16"].path, tampered)
    weights = next((tampered / "prompt_decoder.mlpackage").rglob("weight.bin"))
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    assert_one_line_error(cli("copy-bundle", str(tampered), str(tmp_path / "b")), "does not match its manifest checksum")
    assert not (tmp_path / "b").exists()


def _products(package: Path) -> set[str]:
    return set(re.findall(r'\.library\(name: "([^"]+)"', (package / "Package.swift").read_text()))


def test_app_project_packages_workflow_and_readme_agree():
    project = yaml.safe_load((DEMO / "project.yml").read_text())
    target = project["targets"]["EdgeTAMDemo"]
    assert project["options"]["deploymentTarget"]["iOS"] == "17.0" and target["platform"] == "iOS"
    for dependency in target["dependencies"]:
        package = (DEMO / project["packages"][dependency["package"]]["path"]).resolve()
        assert dependency["product"] in _products(package), (dependency, package)
    assert "-all_load" in target["settings"]["base"]["OTHER_LDFLAGS"]  # ExecuTorch backends register statically
    sources = [s["path"] if isinstance(s, dict) else s for s in target["sources"]]
    assert sources == ["Sources", "Bundle"]
    swift = {p.stem: p.read_text() for p in (DEMO / "Sources").glob("*.swift")}
    assert {"EdgeTAMDemoApp", "PhotoView", "VideoView", "CameraView", "BenchmarkView", "AppModel"} <= set(swift)
    imported = {m for text in swift.values() for m in re.findall(r"^import (\w+)", text, re.M)}
    apple = {"SwiftUI", "UIKit", "PhotosUI", "AVFoundation", "CoreGraphics", "CoreVideo", "CoreTransferable",
             "Foundation", "Observation", "UniformTypeIdentifiers"}
    assert imported - apple == {"EdgeTAMCore", "EdgeTAMCoreML", "EdgeTAMExecuTorch"}
    assert "/ios_demo/EdgeTAMDemo/Bundle/" in (REPO / ".gitignore").read_text()

    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["kit-and-app"]["steps"]
    commands = "\n".join(step.get("run", "") for step in steps)
    assert all("@v" in step["uses"] and step["uses"].count(".") >= 2 for step in steps if "uses" in step)  # pinned
    assert "Xcode_16.4.app" in workflow["env"]["XCODE_APP"]
    for path in ("ios_demo/EdgeTAMDemo/project.yml", "tests/test_swift_kit.py"):
        assert path in commands and (REPO / path).exists(), path
    assert 'edgetam-export sample-data --out "$EDGETAM_EXPORT_DATA"' in commands  # every file checked by its sha256
    # ExecuTorch ships arm64 simulator binaries only: no generic (arm64 + x86_64) simulator build.
    assert all("ARCHS=arm64" in line for line in commands.splitlines() if "iOS Simulator" in line)
    assert "copy-bundle models/ci-coreml-fp16 ios_demo/EdgeTAMDemo/Bundle" in commands
    assert "-scheme EdgeTAMDemo" in commands and "-scheme EdgeTAMExecuTorch" in commands
    assert "EdgeTAMExecuTorch" in _products(REPO / "ios_demo" / "EdgeTAMExecuTorch")
    assert {"EdgeTAMCore", "EdgeTAMCoreML"} <= _products(REPO / "ios_demo" / "EdgeTAMKit")
    assert _products(REPO) == {"EdgeTAMCore", "EdgeTAMCoreML"}  # the root manifest an app adds by URL

    readme = (REPO / "README.md").read_text()
    for text in ("edgetam-export copy-bundle models/edgetam-coreml ios_demo/EdgeTAMDemo/Bundle",
                 "cd ios_demo/EdgeTAMDemo && xcodegen generate", "OTHER_LDFLAGS = -all_load", ".github/workflows/apple.yml"):
        assert text in readme, text


def test_apple_only_swift_in_the_linux_built_package_is_fenced():
    """Files of EdgeTAMKit (built on Linux) that use Apple frameworks sit whole behind `#if canImport(CoreML)`."""
    fenced = []
    for path in sorted((REPO / "ios_demo" / "EdgeTAMKit").rglob("*.swift")):
        text = path.read_text()
        apple = re.search(r"^import (CoreML|CoreVideo|UIKit|SwiftUI|AVFoundation|EdgeTAMCoreML)$", text, re.M)
        if apple or "EdgeTAMCoreML" in path.parts:
            assert text.startswith("#if canImport(CoreML)") and text.rstrip().endswith("#endif"), path
            fenced.append(path.name)
    assert {"CoreMLStageRunner.swift", "CoreMLBundle.swift", "CoreMLReplayTests.swift"} <= set(fenced)
