"""Image mode on exported bundles reproduces transformers' EdgeTamModel + Sam2Processor, example by example.

The examples are those of the transformers EdgeTAM documentation (../shared/reference), with
groceries.jpg in place of the dog picture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime import EdgeTamPredictor

BACKENDS = ("executorch-xnnpack-fp32", "onnx-fp32")
MIN_IOU = 0.99
SCORE_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def images(data_dir):
    return {name: Image.open(data_dir / "images" / f"{name}.jpg").convert("RGB") for name in ("truck", "groceries")}


@pytest.fixture(scope="module", params=BACKENDS)
def predictor(request, tiny_bundles):
    return EdgeTamPredictor.from_bundle(tiny_bundles[request.param].path)


def reference_run(reference, images, multimask_output=True, **prompts):
    """transformers: processor -> EdgeTamModel -> post_process_masks, as the documentation does."""
    inputs = reference.processor(images=images, return_tensors="pt", **prompts)
    with torch.no_grad():
        outputs = reference.image_model(**inputs, multimask_output=multimask_output)
    masks = reference.processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])
    return [m.numpy() for m in masks], outputs.iou_scores.numpy(), outputs


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_same(prediction, reference_masks: np.ndarray, reference_scores: np.ndarray) -> None:
    """Every mask IoU >= 0.99 and every score within 1e-3 of the reference's, for the real objects."""
    objects = prediction.masks.shape[0]
    assert prediction.masks.shape == reference_masks[:objects].shape
    for i in range(objects):
        for k in range(prediction.masks.shape[1]):
            iou = mask_iou(prediction.masks[i, k], reference_masks[i, k])
            assert iou >= MIN_IOU, f"object {i} mask {k}: IoU {iou:.4f}"
    np.testing.assert_allclose(prediction.scores, reference_scores[:objects], atol=SCORE_TOLERANCE, rtol=0)
    # Masks that say something: neither empty nor the whole image.
    assert 0.0 < prediction.masks.mean() < 1.0


def test_single_click_gives_three_masks_ranked_by_score(predictor, tiny_reference, images):
    masks, scores, _ = reference_run(tiny_reference, images["truck"], input_points=[[[[500, 375]]]], input_labels=[[[1]]])
    embedding = predictor.set_image(images["truck"])
    prediction = predictor.predict(embedding, points=[[[500, 375]]], labels=[[1]])
    assert prediction.masks.shape == (1, 3, 1200, 1800)
    assert_same(prediction, masks[0], scores[0])
    ranked = prediction.ranked()
    assert (np.diff(ranked.scores[0]) <= 0).all()


def test_positive_and_negative_clicks_on_one_object(predictor, tiny_reference, images):
    points, labels = [[[[500, 375], [1125, 625]]]], [[[1, 0]]]
    masks, scores, _ = reference_run(tiny_reference, images["truck"], input_points=points, input_labels=labels)
    prediction = predictor.predict(predictor.set_image(images["truck"]), points=points[0], labels=labels[0])
    assert_same(prediction, masks[0], scores[0])


def test_box(predictor, tiny_reference, images):
    masks, scores, _ = reference_run(tiny_reference, images["truck"], input_boxes=[[[75, 275, 1725, 850]]])
    prediction = predictor.predict(predictor.set_image(images["truck"]), boxes=[[75, 275, 1725, 850]])
    assert_same(prediction, masks[0], scores[0])


def test_several_objects_single_mask_each(predictor, tiny_reference, images):
    points, labels = [[[[500, 375]], [[650, 750]]]], [[[1], [1]]]
    masks, scores, _ = reference_run(
        tiny_reference, images["truck"], multimask_output=False, input_points=points, input_labels=labels
    )
    prediction = predictor.predict(predictor.set_image(images["truck"]), points=points[0], labels=labels[0],
                                   multimask_output=False)
    assert prediction.masks.shape == (2, 1, 1200, 1800)
    assert_same(prediction, masks[0], scores[0])


@pytest.mark.parametrize(
    ("points", "labels"),
    [
        ([[[[500, 375]]], [[[770, 200]]]], [[[1]], [[1]]]),  # one click per image
        ([[[[500, 375]], [[650, 750]]], [[[770, 200]]]], [[[1], [1]], [[1]]]),  # 2 objects and 1 object
        ([[[[500, 375]], [[650, 750]]], [[[400, 300]], [[630, 300], [550, 300]]]], [[[1], [1]], [[1], [1, 1]]]),
    ],
    ids=["click-per-image", "objects-per-image-differ", "points-per-object-differ"],
)
def test_batches_of_images(predictor, tiny_reference, images, points, labels):
    batch = [images["truck"], images["groceries"]]
    masks, scores, _ = reference_run(
        tiny_reference, batch, multimask_output=False, input_points=points, input_labels=labels
    )
    predictions = predictor.segment(batch, input_points=points, input_labels=labels, multimask_output=False)
    for i, prediction in enumerate(predictions):
        assert prediction.masks.shape[0] == len(points[i])
        assert_same(prediction, masks[i], scores[i])


def test_several_boxes_per_image(predictor, tiny_reference, images):
    boxes = [
        [[75, 275, 1725, 850], [425, 600, 700, 875], [1375, 550, 1650, 800], [1240, 675, 1400, 750]],
        [[450, 170, 520, 350], [350, 190, 450, 350], [500, 170, 580, 350], [580, 170, 640, 350]],
    ]
    batch = [images["truck"], images["groceries"]]
    masks, scores, _ = reference_run(tiny_reference, batch, multimask_output=False, input_boxes=boxes)
    predictions = predictor.segment(batch, input_boxes=boxes, multimask_output=False)
    for i, prediction in enumerate(predictions):
        assert_same(prediction, masks[i], scores[i])


def test_refine_with_previous_mask_reuses_the_embedding(predictor, tiny_reference, images, monkeypatch):
    processor, model = tiny_reference.processor, tiny_reference.image_model
    inputs = processor(images=images["truck"], input_points=[[[[500, 375]]]], input_labels=[[[1]]], return_tensors="pt")
    with torch.no_grad():
        first = model(**inputs)
        mask_input = first.pred_masks[:, :, torch.argmax(first.iou_scores.squeeze())]
        refine_inputs = processor(input_points=[[[[500, 375], [450, 300]]]], input_labels=[[[1, 1]]],
                                  original_sizes=inputs["original_sizes"], return_tensors="pt")
        refined = model(**refine_inputs, input_masks=mask_input, image_embeddings=first.image_embeddings,
                        multimask_output=False)
    expected = processor.post_process_masks(refined.pred_masks, inputs["original_sizes"])[0].numpy()

    embedding = predictor.set_image(images["truck"])
    initial = predictor.predict(embedding, points=[[[500, 375]]])
    best = int(np.argmax(initial.scores[0]))
    calls = []
    original_run = predictor.runners["image_encoder"].run
    monkeypatch.setattr(predictor.runners["image_encoder"], "run", lambda *a: calls.append(1) or original_run(*a))
    prediction = predictor.predict(embedding, points=[[[500, 375], [450, 300]]], labels=[[1, 1]],
                                   mask_input=initial.low_res_logits[:, best], multimask_output=False)
    assert calls == [], "refinement must not run the image encoder again"
    assert_same(prediction, expected, refined.iou_scores.numpy()[0])


def test_preprocessing_matches_the_processor(tiny_reference, images):
    from edgetam_export.runtime.processing import preprocess_image

    for image in images.values():
        expected = tiny_reference.processor(images=image, return_tensors="pt")["pixel_values"].numpy()
        got = preprocess_image(image, tiny_reference.image_size)
        difference = np.abs(got - expected)
        # Pillow's bilinear filter vs torchvision's port of it: at most one grey level on few pixels.
        assert difference.max() <= 1.01 / (255 * 0.224)
        assert (difference > 1e-5).mean() < 0.01


def test_postprocessing_matches_interpolate():
    from edgetam_export.runtime.processing import resize_logits

    logits = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    for size in ((1200, 1800), (534, 800), (40, 30)):
        expected = torch.nn.functional.interpolate(torch.from_numpy(logits), size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(resize_logits(logits, *size), expected.numpy(), atol=2e-5)


def test_antialiased_resize_matches_interpolate():
    """The resize transformers applies to mask prompts (down to the model size, and from odd sizes)."""
    from edgetam_export.runtime.processing import resize_antialiased

    values = np.random.default_rng(1).standard_normal((2, 540, 960)).astype(np.float32)
    for size in ((256, 256), (1024, 1024), (33, 7), (540, 961)):
        expected = torch.nn.functional.interpolate(
            torch.from_numpy(values)[None], size, mode="bilinear", align_corners=False, antialias=True
        )[0]
        np.testing.assert_allclose(resize_antialiased(values, *size), expected.numpy(), atol=2e-6)


def test_bad_prompts_give_one_clear_error(predictor, images, tmp_path):
    embedding = predictor.set_image(images["groceries"])
    with pytest.raises(EdgeTamExportError, match="outside the 800x534 image"):
        predictor.predict(embedding, points=[[[900, 100]]])
    with pytest.raises(EdgeTamExportError, match="outside the 800x534 image"):
        predictor.predict(embedding, boxes=[[10, 10, 900, 100]])
    with pytest.raises(EdgeTamExportError, match="no prompt given"):
        predictor.predict(embedding)
    with pytest.raises(EdgeTamExportError, match="needs 10 prompt slots.*the bundle has 8"):
        predictor.predict(embedding, points=[[[10 * i, 10] for i in range(9)]])
    with pytest.raises(EdgeTamExportError, match="labels must be 1"):
        predictor.predict(embedding, points=[[[10, 10]]], labels=[[7]])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(EdgeTamExportError, match="cannot decode image"):
        predictor.set_image(broken)


def test_more_objects_than_the_bundle_holds_are_split(predictor, tiny_reference, images):
    points = [[[100 + 60 * i, 200]] for i in range(predictor.max_objects + 2)]
    masks, scores, _ = reference_run(
        tiny_reference, images["truck"], multimask_output=False, input_points=[points], input_labels=[[[1]] * len(points)]
    )
    prediction = predictor.predict(predictor.set_image(images["truck"]), points=points, multimask_output=False)
    assert prediction.masks.shape[0] == predictor.max_objects + 2
    assert_same(prediction, masks[0], scores[0])
