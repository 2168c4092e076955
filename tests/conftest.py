"""Shared fixtures: a tiny seeded reference, the shared test data, and tiny bundles exported once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# No test may reach a hub: transformers and huggingface_hub fail at once instead of downloading.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """$EDGETAM_EXPORT_DATA, ./data from 'edgetam-export sample-data --out data', or ../shared/data."""
    from edgetam_export.verification.sample_data import check_data_dir, default_data_dir

    found = default_data_dir()
    if found is None:
        pytest.fail("no test data: run 'edgetam-export sample-data --out data' in the checkout (or set "
                    "EDGETAM_EXPORT_DATA)")
    return check_data_dir(found).resolve()


@pytest.fixture(scope="session")
def tiny_reference():
    from edgetam_export.reference import random_reference

    return random_reference(seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_shapes(tiny_reference):
    from edgetam_export.recipes import load_recipe
    from edgetam_export.stages.registry import stage_shapes

    return stage_shapes(tiny_reference.video_model, load_recipe("executorch-xnnpack-fp32").with_shapes(max_objects=4).shapes)


@pytest.fixture(scope="session")
def tiny_cases(tiny_reference, tiny_shapes, data_dir):
    from edgetam_export.verification.samples import build_cases

    return build_cases(tiny_reference, tiny_shapes, data_dir)


def _export(reference, recipe, out: Path, data_dir: Path):
    from edgetam_export.export import export_bundle
    from edgetam_export.recipes import load_recipe

    recipe = (load_recipe(recipe) if isinstance(recipe, str) else recipe).with_shapes(max_objects=4)
    return export_bundle(reference, recipe, out, data_dir=data_dir)


def _exported_once(tmp_path_factory, worker_id: str, folder: str, recipes: tuple, reference, data_dir):
    """Each recipe's tiny bundle (a shipped recipe's name or a Recipe), exported by the first pytest-xdist worker
    that needs it and read by the others.

    The bundles live in this run's shared temporary folder, one lock per bundle: a worker exports the ones
    nobody has started and then waits for the rest, so two workers export two bundles side by side.
    """
    from filelock import FileLock, Timeout

    from edgetam_export.bundle import read_bundle

    run_root = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        run_root = run_root.parent  # shared by this run's workers, unique to the run
    root = run_root / folder
    root.mkdir(exist_ok=True)
    bundles, waiting = {}, []

    def export_or_read(name: str) -> None:
        if (root / name / "manifest.json").is_file():
            bundles[name] = read_bundle(root / name)
        else:
            bundles[name] = _export(reference, by_name[name], root / name, data_dir)

    by_name = {recipe if isinstance(recipe, str) else recipe.name: recipe for recipe in recipes}
    for name in by_name:
        lock = FileLock(str(root / f"{name}.lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waiting.append((name, lock))
            continue
        try:
            export_or_read(name)
        finally:
            lock.release()
    for name, lock in waiting:
        with lock:
            export_or_read(name)
    return {name: bundles[name] for name in by_name}


@pytest.fixture(scope="session")
def tiny_bundles(tiny_reference, data_dir, tmp_path_factory, worker_id) -> dict:
    """One tiny bundle per backend, exported once for the whole run."""
    return _exported_once(tmp_path_factory, worker_id, "bundles", ("executorch-xnnpack-fp32", "onnx-fp32"),
                          tiny_reference, data_dir)


@pytest.fixture(scope="session")
def coreml_bundles(tiny_reference, data_dir, tmp_path_factory, worker_id) -> dict:
    """One tiny bundle per Core ML recipe, exported once (the Core ML tests and the Swift kit read them)."""
    return _exported_once(tmp_path_factory, worker_id, "coreml", ("coreml-fp16", "coreml-fp32", "executorch-coreml-fp16"),
                          tiny_reference, data_dir)


@pytest.fixture(scope="session")
def kit() -> Path:
    """The release `edgetam-kit` (ios_demo/EdgeTAMKitCLI), built by ios_demo/scripts/build-kit-cli.sh against this
    environment's executorch wheel. A missing toolchain or a failed build fails the tests that need it."""
    assert shutil.which("swift"), "the Swift toolchain is missing: install Swift 6 (edgetam-kit is built on Linux too)"
    built = subprocess.run([str(REPO / "ios_demo" / "scripts" / "build-kit-cli.sh"), "release"], capture_output=True,
                           text=True, timeout=1800, env=os.environ | {"PYTHON": sys.executable})
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-5000:]
    binary = Path(built.stdout.strip().splitlines()[-1])
    assert binary.is_file() and os.access(binary, os.X_OK), built.stdout
    return binary
