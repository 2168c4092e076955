"""The full-size EdgeTAM configuration, exported and verified once per backend (minutes on 2 cores)."""

from __future__ import annotations

import pytest

from edgetam_export.export import export_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.stages.registry import STAGES

pytestmark = pytest.mark.full


@pytest.fixture(scope="module")
def full_reference():
    return random_reference(seed=0, size="full")


# executorch-coreml-fp16 shares coreml-fp16's Core ML conversion; its full size is measured by hand
# (about 140 s) to keep CI within its time budget, and its tiny bundle is verified in test_coreml.
@pytest.mark.parametrize("recipe_name", ["executorch-xnnpack-fp32", "onnx-fp32", "coreml-fp16"])
def test_full_size_export_passes_parity(full_reference, recipe_name, tmp_path, data_dir):
    recipe = load_recipe(recipe_name)
    bundle = export_bundle(full_reference, recipe, tmp_path / recipe_name, data_dir=data_dir)
    shapes = bundle.manifest.shapes
    # On Linux the Core ML bundle is checked by the MIL interpreter (fp16 rounded per operation).
    assert shapes.image_size == 1024 and shapes.memory_tokens == 512 and shapes.max_objects == 8
    assert bundle.spec("image_encoder").outputs[2].shape == (1, 32, 256, 256)
    parity = bundle.manifest.parity
    assert parity["passed"]
    for stage in STAGES:
        assert parity["summary"][stage]["min_psnr_db"] >= recipe.parity.min_psnr_db
    assert parity["summary"]["prompt_decoder"]["min_mask_iou"] >= recipe.parity.min_mask_iou
