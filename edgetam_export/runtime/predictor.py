"""Image segmentation on an exported bundle: everything transformers' EdgeTamModel + Sam2Processor do.

The encoder runs once per image (`set_image`); every prompt after that is one decoder call for up
to `max_objects` objects (more objects are split over several calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from edgetam_export.bundle import Bundle, read_bundle
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.processing import (
    check_labels,
    ObjectPrompt,
    load_image,
    pack_slots,
    image_encoder_inputs,
    resize_logits,
    select_masks,
)
from edgetam_export.runtime.runners import StageRunner, load_runners
from edgetam_export.runtime.runners.base import BundleRuntime
from edgetam_export.stages.spec import NEGATIVE_LABEL, PADDING_POINT_LABEL, POSITIVE_LABEL


@dataclass
class ImageEmbedding:
    """The image encoder's outputs for one image, reused by every prompt on it."""

    features: dict[str, np.ndarray]
    original_size: tuple[int, int]  # (height, width)


@dataclass
class Prediction:
    """Masks for each object of one image, best-scored first when several are returned."""

    masks: np.ndarray  # (objects, k, height, width) bool at the original size
    scores: np.ndarray  # (objects, k) predicted IoU
    low_res_logits: np.ndarray  # (objects, k, m, m): feed one back as mask_input to refine
    object_score_logits: np.ndarray  # (objects,)

    def ranked(self) -> Prediction:
        """The same masks sorted by score, best first, per object."""
        order = np.argsort(-self.scores, axis=1, kind="stable")
        rows = np.arange(len(order))[:, None]
        return Prediction(self.masks[rows, order], self.scores[rows, order], self.low_res_logits[rows, order],
                          self.object_score_logits)


def _object_prompts(
    points: Sequence | None, labels: Sequence | None, boxes: Sequence | None, pad_to: int | None = None
) -> list[ObjectPrompt]:
    """Nested per-object prompts -> ObjectPrompts, padding clicks with transformers' padding points."""
    count = len(points) if points is not None else len(boxes) if boxes is not None else 0
    if points is not None and boxes is not None and len(points) != len(boxes):
        raise EdgeTamExportError(f"got {len(points)} point sets and {len(boxes)} boxes: give one of each per object")
    if labels is not None and points is not None and len(labels) != len(points):
        raise EdgeTamExportError(f"got {len(points)} point sets but {len(labels)} label sets")
    longest = pad_to if pad_to is not None else max((len(p) for p in points), default=0) if points is not None else 0
    prompts = []
    for i in range(count):
        xy = np.asarray(points[i], dtype=np.float32).reshape(-1, 2) if points is not None else np.zeros((0, 2))
        lab = (
            check_labels(labels[i], (POSITIVE_LABEL, NEGATIVE_LABEL, PADDING_POINT_LABEL))
            if labels is not None
            else np.full(len(xy), POSITIVE_LABEL, dtype=np.int32)
        )
        if len(lab) != len(xy):
            raise EdgeTamExportError(f"object {i} has {len(xy)} points but {len(lab)} labels")
        padding = longest - len(xy)
        xy = np.concatenate([xy, np.full((padding, 2), PADDING_POINT_LABEL, np.float32)])
        lab = np.concatenate([lab, np.full(padding, PADDING_POINT_LABEL, np.int32)])
        box = np.asarray(boxes[i], dtype=np.float32).reshape(-1) if boxes is not None else None
        if box is not None and box.shape != (4,):
            raise EdgeTamExportError(f"object {i}: a box needs 4 numbers x0,y0,x1,y1, got {box.tolist()}")
        prompts.append(ObjectPrompt(points=xy, labels=lab, box=box))
    return prompts


class EdgeTamPredictor(BundleRuntime):
    """Point, box and mask prompts on still images, through a bundle's image_encoder and prompt_decoder."""

    def __init__(self, bundle: Bundle, runners: dict[str, StageRunner]) -> None:
        super().__init__(bundle, runners)
        self.mask_size = bundle.manifest.shapes.low_res_mask_size


    @classmethod
    def from_bundle(cls, path: str | Path) -> EdgeTamPredictor:
        """Open a bundle with the runtime of its backend (ExecuTorch, ONNX Runtime)."""
        bundle = read_bundle(path)
        return cls(bundle, load_runners(bundle, ["image_encoder", "prompt_decoder"]))

    def set_image(self, image: str | Path | Image.Image | np.ndarray) -> ImageEmbedding:
        """Run the image encoder once; the embedding serves any number of prompts."""
        picture = load_image(image)
        features = self.stages.run("image_encoder", image_encoder_inputs(picture, self.runners["image_encoder"].spec))
        return ImageEmbedding(features=features, original_size=(picture.height, picture.width))

    def decode(
        self,
        embedding: ImageEmbedding,
        prompts: list[ObjectPrompt],
        mask_input: np.ndarray | None = None,
        in_model_pixels: bool = False,
    ) -> dict[str, np.ndarray]:
        """Raw decoder outputs for the objects' prompts, in chunks of at most max_objects.

        Prompts are in original image pixels (checked against the image), or already in model
        pixels with `in_model_pixels` (as the mask-generation pipeline gives them).
        """
        height, width = embedding.original_size
        if not prompts and mask_input is None:
            raise EdgeTamExportError("no prompt given: pass at least one point, box or mask")
        if not prompts:
            prompts = [ObjectPrompt(np.zeros((0, 2), np.float32), np.zeros(0, np.int32)) for _ in range(len(mask_input))]
        if in_model_pixels:
            scale_x = scale_y = 1.0
        else:
            for prompt in prompts:
                prompt.validate(width, height)
            scale_x, scale_y = self.image_size / width, self.image_size / height
        coords, labels = pack_slots(prompts, self.point_slots, scale_x, scale_y)
        masks = np.zeros((len(prompts), 1, self.mask_size, self.mask_size), np.float32)
        has_mask = np.zeros(len(prompts), np.float32)
        if mask_input is not None:
            mask_input = np.asarray(mask_input, dtype=np.float32).reshape(len(prompts), -1, *np.shape(mask_input)[-2:])
            if mask_input.shape[1:] != (1, self.mask_size, self.mask_size):
                raise EdgeTamExportError(
                    f"mask_input must be one {self.mask_size}x{self.mask_size} low-resolution logit map per object "
                    f"(a Prediction's low_res_logits), got {mask_input.shape}"
                )
            masks, has_mask = mask_input, np.ones(len(prompts), np.float32)
        return self.stages.run_batched("prompt_decoder", {
            "image_embeddings": embedding.features["image_embeddings"],  # one image, shared by every object
            "high_res_features_0": embedding.features["high_res_features_0"],
            "high_res_features_1": embedding.features["high_res_features_1"],
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": masks,
            "has_mask_input": has_mask,
        })

    def predict(
        self,
        embedding: ImageEmbedding,
        points: Sequence | None = None,
        labels: Sequence | None = None,
        boxes: Sequence | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Segment objects on one image.

        points: per object, a list of (x, y) clicks in original pixels; labels: per object, 1 / 0 for
        each click (default all positive); boxes: per object (x0, y0, x1, y1); mask_input: per object a
        low-resolution logit map from an earlier Prediction. Objects with fewer clicks are padded as
        transformers pads them, so results equal EdgeTamModel's on the same call.
        """
        return self._finish(embedding, self.decode(embedding, _object_prompts(points, labels, boxes), mask_input),
                            multimask_output)

    def _finish(self, embedding: ImageEmbedding, raw: dict[str, np.ndarray], multimask_output: bool) -> Prediction:
        logits, scores, _ = select_masks(raw["mask_logits"], raw["iou_scores"], multimask_output)
        height, width = embedding.original_size
        masks = resize_logits(logits, height, width) > 0.0
        return Prediction(masks, scores, logits, raw["object_score_logits"][:, 0])

    def segment(
        self,
        images: Sequence,
        input_points: Sequence | None = None,
        input_labels: Sequence | None = None,
        input_boxes: Sequence | None = None,
        multimask_output: bool = True,
    ) -> list[Prediction]:
        """transformers-style batch: nested [image][object][point] prompts for several images.

        As with Sam2Processor, every object is padded to the largest number of clicks in the whole
        batch; an image with fewer objects simply returns fewer (no padding objects are decoded).
        """
        count = len(images)
        for name, nested in (("input_points", input_points), ("input_labels", input_labels), ("input_boxes", input_boxes)):
            if nested is not None and len(nested) != count:
                raise EdgeTamExportError(f"{name} has {len(nested)} entries for {count} images")
        longest = max((len(obj) for img in input_points for obj in img), default=0) if input_points else None
        predictions = []
        for i, image in enumerate(images):
            embedding = self.set_image(image)
            prompts = _object_prompts(
                input_points[i] if input_points is not None else None,
                input_labels[i] if input_labels is not None else None,
                input_boxes[i] if input_boxes is not None else None,
                pad_to=longest,
            )
            predictions.append(self._finish(embedding, self.decode(embedding, prompts), multimask_output))
        return predictions
