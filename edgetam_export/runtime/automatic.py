"""Automatic mask generation: transformers' `mask-generation` pipeline, on an exported bundle, in NumPy.

A grid of single-click prompts (on the whole image and, with `crops_n_layers`, on overlapping crops)
goes through the decoder in batches; masks are kept when their predicted IoU and stability are high
enough and they do not touch a crop's inner edge, then non-maximum suppression removes duplicates.
Every step, including the pipeline's coordinate conventions, follows transformers' implementation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import product

import numpy as np
from PIL import Image

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.predictor import EdgeTamPredictor
from edgetam_export.runtime.processing import ObjectPrompt, load_image, resize_logits, stability_scores
from edgetam_export.stages.spec import POSITIVE_LABEL


@dataclass(frozen=True)
class MaskGenerationSettings:
    """The pipeline's parameters, with its defaults."""

    points_per_batch: int = 64
    points_per_crop: int = 32
    crops_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    crops_nms_thresh: float = 0.7

    def __post_init__(self) -> None:
        """Refuse settings the pipeline cannot run, naming the flag (as the CLI spells it)."""
        # Upper bounds: a 100000-point grid is 10^10 prompts (37 GiB of coordinates before the first decode).
        counts = {"--points-per-side": (self.points_per_crop, 256), "--points-per-batch": (self.points_per_batch, 4096),
                  "crop_n_points_downscale_factor": (self.crop_n_points_downscale_factor, 64)}
        for flag, (value, most) in counts.items():
            if not isinstance(value, int) or not 1 <= value <= most:
                raise EdgeTamExportError(f"{flag} must be a whole number from 1 to {most}, got {value}")
        if not 0 <= self.crops_n_layers <= 4:
            raise EdgeTamExportError(f"--crop-layers must be 0 to 4, got {self.crops_n_layers}")
        fractions = {"--pred-iou-thresh": self.pred_iou_thresh, "--stability-thresh": self.stability_score_thresh,
                     "crops_nms_thresh": self.crops_nms_thresh, "crop_overlap_ratio": self.crop_overlap_ratio}
        for flag, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise EdgeTamExportError(f"{flag} must be between 0 and 1, got {value}")


@dataclass
class GeneratedMasks:
    masks: list[np.ndarray]  # each (height, width) bool
    scores: np.ndarray  # (count,) predicted IoU
    boxes: np.ndarray  # (count, 4) x0, y0, x1, y1 (inclusive pixel bounds)


def point_grid(per_side: int) -> np.ndarray:
    """(per_side**2, 2) points evenly spaced in [0, 1]^2, x varying fastest."""
    offset = 1.0 / (2 * per_side)
    side = np.linspace(offset, 1 - offset, per_side, dtype=np.float32)
    xs = np.tile(side[None, :], (per_side, 1))
    ys = np.tile(side[:, None], (1, per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(layers: int, overlap_ratio: float, height: int, width: int) -> tuple[list[list[int]], list[int]]:
    """The whole image, then 2**(i+1) x 2**(i+1) overlapping crops per layer i (x0, y0, x1, y1)."""
    boxes, layer_of = [[0, 0, width, height]], [0]
    short_side = min(height, width)
    for layer in range(layers):
        per_side = 2 ** (layer + 1)
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = int(math.ceil((overlap * (per_side - 1) + width) / per_side))
        crop_h = int(math.ceil((overlap * (per_side - 1) + height) / per_side))
        x0s = [int((crop_w - overlap) * i) for i in range(per_side)]
        y0s = [int((crop_h - overlap) * i) for i in range(per_side)]
        for left, top in product(x0s, y0s):
            boxes.append([left, top, min(left + crop_w, width), min(top + crop_h, height)])
            layer_of.append(layer + 1)
    return boxes, layer_of


def grid_in_model_pixels(grid: np.ndarray, crop_height: int, crop_width: int, target: int) -> np.ndarray:
    """Grid points in crop pixels, scaled as the pipeline does (longest side to `target`)."""
    points = grid * np.array([crop_width, crop_height], dtype=np.float32)
    scale = target * 1.0 / max(crop_height, crop_width)
    new_width, new_height = int(crop_width * scale + 0.5), int(crop_height * scale + 0.5)
    points[:, 0] = points[:, 0] * np.float32(new_width / crop_width)
    points[:, 1] = points[:, 1] * np.float32(new_height / crop_height)
    return points


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """(n, 4) inclusive bounding boxes of (n, h, w) boolean masks; zeros for an empty mask."""
    boxes = np.zeros((len(masks), 4), dtype=np.int64)
    for i, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if len(rows) and len(cols):
            boxes[i] = [cols[0], rows[0], cols[-1], rows[-1]]
    return boxes


def near_crop_edge(boxes: np.ndarray, crop: list[int], image_box: list[int], atol: float = 20.0) -> np.ndarray:
    """Masks touching an inner crop edge (not an image edge) are cut off by the crop: drop them."""
    left, top = crop[0], crop[1]
    shifted = (boxes + np.array([left, top, left, top])).astype(np.float32)
    at_crop = np.abs(shifted - np.array(crop, np.float32)) <= atol
    at_image = np.abs(shifted - np.array(image_box, np.float32)) <= atol
    return np.any(at_crop & ~at_image, axis=1)


def non_maximum_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices kept by greedy NMS on (x0, y0, x1, y1) boxes, highest score first (torchvision.ops.nms)."""
    order = np.argsort(-scores, kind="stable")
    boxes = boxes.astype(np.float32)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    suppressed = np.zeros(len(boxes), dtype=bool)
    for index in order:
        if suppressed[index]:
            continue
        keep.append(index)
        x0 = np.maximum(boxes[index, 0], boxes[:, 0])
        y0 = np.maximum(boxes[index, 1], boxes[:, 1])
        x1 = np.minimum(boxes[index, 2], boxes[:, 2])
        y1 = np.minimum(boxes[index, 3], boxes[:, 3])
        intersection = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
        iou = intersection / (areas[index] + areas - intersection)
        suppressed |= iou > threshold
    return np.array(keep, dtype=np.int64)


def generate_masks(
    predictor: EdgeTamPredictor,
    image: Image.Image | np.ndarray | str,
    settings: MaskGenerationSettings = MaskGenerationSettings(),
    progress: Callable[[int, int], None] | None = None,
) -> GeneratedMasks:
    """Segment everything in an image, as `pipeline("mask-generation")` does."""
    if settings.points_per_batch < 1:
        raise EdgeTamExportError("points_per_batch must be at least 1")
    picture = load_image(image)
    width, height = picture.width, picture.height
    boxes, layer_of = crop_boxes(settings.crops_n_layers, settings.crop_overlap_ratio, height, width)
    grids = [
        point_grid(int(settings.points_per_crop / settings.crop_n_points_downscale_factor**layer))
        for layer in range(settings.crops_n_layers + 1)
    ]
    kept_masks, kept_scores, kept_boxes = [], [], []
    total = sum(len(grids[layer]) for layer in layer_of)
    done = 0
    for crop, layer in zip(boxes, layer_of):
        x0, y0, x1, y1 = crop
        embedding = predictor.set_image(picture.crop((x0, y0, x1, y1)))
        crop_h, crop_w = y1 - y0, x1 - x0
        points = grid_in_model_pixels(grids[layer], crop_h, crop_w, predictor.image_size)
        for start in range(0, len(points), settings.points_per_batch):
            batch = points[start : start + settings.points_per_batch]
            # The pipeline's points are already in model pixels: pass them through unscaled.
            prompts = [ObjectPrompt(p[None], np.array([POSITIVE_LABEL], np.int32)) for p in batch]
            raw = predictor.decode(embedding, prompts, in_model_pixels=True)
            logits = resize_logits(raw["mask_logits"][:, 1:], crop_h, crop_w).reshape(-1, crop_h, crop_w)
            scores = raw["iou_scores"][:, 1:].reshape(-1)
            keep = scores > settings.pred_iou_thresh if settings.pred_iou_thresh > 0 else np.ones(len(scores), bool)
            if settings.stability_score_thresh > 0:
                stability = stability_scores(logits, settings.stability_score_offset, settings.mask_threshold, empty=0.0)
                keep &= stability > settings.stability_score_thresh
            binary = logits[keep] > settings.mask_threshold
            scores = scores[keep]
            found = mask_boxes(binary)
            inside = ~near_crop_edge(found, crop, [0, 0, width, height])
            for mask, score, box in zip(binary[inside], scores[inside], found[inside]):
                full = np.zeros((height, width), dtype=bool)
                full[y0:y1, x0:x1] = mask
                kept_masks.append(full)
                kept_scores.append(score)
                kept_boxes.append(box + np.array([x0, y0, x0, y0]))
            done += len(batch)
            if progress:
                progress(done, total)
    if not kept_masks:
        return GeneratedMasks([], np.zeros(0, np.float32), np.zeros((0, 4), np.int64))
    scores, found = np.array(kept_scores, np.float32), np.array(kept_boxes)
    keep = non_maximum_suppression(found, scores, settings.crops_nms_thresh)
    return GeneratedMasks([kept_masks[i] for i in keep], scores[keep], found[keep])
