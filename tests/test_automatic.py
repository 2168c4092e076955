"""Automatic mask generation on a bundle returns the same masks as transformers' mask-generation pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline
from transformers.models.sam2 import image_processing_sam2 as sam2_processing

from edgetam_export.runtime import EdgeTamPredictor
from edgetam_export.runtime.automatic import (
    MaskGenerationSettings,
    crop_boxes,
    generate_masks,
    mask_boxes,
    near_crop_edge,
    non_maximum_suppression,
    point_grid,
)

# Random weights score every mask near 0.5 (no IoU filter would keep anything at the default 0.88),
# so the comparison keeps masks by stability alone; NMS at 1.0 keeps every distinct mask, and the
# crop case keeps the pipeline's default NMS.
CASES = {
    "whole-image": dict(points_per_crop=8, pred_iou_thresh=0.0, stability_score_thresh=0.9,
                        stability_score_offset=0.1, crops_nms_thresh=1.0),
    "with-crops": dict(points_per_crop=8, pred_iou_thresh=0.0, stability_score_thresh=0.9,
                       stability_score_offset=0.1, crops_n_layers=1),
}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.mark.parametrize("backend", ["executorch-xnnpack-fp32", "onnx-fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_same_masks_as_the_pipeline(tiny_reference, tiny_bundles, data_dir, backend, case):
    image = Image.open(data_dir / "images" / "groceries.jpg").convert("RGB")
    settings = CASES[case] | {"points_per_batch": 16}
    generator = pipeline("mask-generation", model=tiny_reference.image_model,
                         image_processor=tiny_reference.processor.image_processor, device="cpu")
    expected = generator(image, **settings)
    expected_masks = [m.numpy() for m in expected["masks"]]
    predictor = EdgeTamPredictor.from_bundle(tiny_bundles[backend].path)
    got = generate_masks(predictor, image, MaskGenerationSettings(**settings))

    assert len(got.masks) == len(expected_masks) >= 1
    if case == "whole-image":
        assert len(got.masks) >= 20, "the comparison must cover many masks"
    np.testing.assert_allclose(np.sort(got.scores), np.sort(expected["scores"].numpy()), atol=1e-3)
    unmatched = list(range(len(expected_masks)))
    for mask in got.masks:
        ious = [_iou(mask, expected_masks[j]) for j in unmatched]
        best = int(np.argmax(ious))
        assert ious[best] >= 0.98
        unmatched.pop(best)


def test_building_blocks_match_transformers():
    assert np.allclose(point_grid(5), sam2_processing._build_point_grid(5).numpy())
    for layers in (0, 1, 2):
        ours = crop_boxes(layers, 512 / 1500, 534, 800)
        assert ours == sam2_processing._generate_per_layer_crops(layers, 512 / 1500, (534, 800))
    rng = np.random.default_rng(0)
    masks = rng.random((6, 40, 50)) > 0.97
    masks[2] = False
    expected = sam2_processing._batched_mask_to_box(torch.from_numpy(masks)).numpy()
    assert (mask_boxes(masks) == expected).all()
    crop, image = [0, 0, 30, 40], [0, 0, 50, 40]
    reference = sam2_processing._is_box_near_crop_edge(torch.from_numpy(expected), crop, image).numpy()
    assert (near_crop_edge(expected, crop, image) == reference).all()


def test_nms_matches_torchvision():
    from torchvision.ops import nms

    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 100, (200, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (200, 2))], axis=1).astype(np.float32)
    scores = rng.random(200).astype(np.float32)
    for threshold in (0.3, 0.7):
        expected = nms(torch.from_numpy(boxes), torch.from_numpy(scores), threshold).numpy()
        assert (non_maximum_suppression(boxes, scores, threshold) == expected).all()
