"""NumPy pre- and post-processing equal to transformers' Sam2Processor, and prompt packing.

Pre-processing resizes with Pillow's bilinear filter, the algorithm torchvision's antialiased uint8
resize was ported from (measured here: at most one grey level apart on about 0.1% of pixels), then
normalizes with ImageNet statistics. Post-processing upsamples mask logits bilinearly
(align_corners=False) to the original size, as `post_process_masks` does.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import (
    BOX_CORNER_LABELS,
    EMPTY_SLOT_LABEL,
    IMAGE_INPUT,
    IMAGE_MEAN,
    IMAGE_STD,
    NEGATIVE_LABEL,
    NOT_A_POINT_LABEL,
    PADDING_POINT_LABEL,
    POSITIVE_LABEL,
    StageSpec,
)

T = TypeVar("T")

IMAGENET_MEAN = np.array(IMAGE_MEAN, dtype=np.float32)
IMAGENET_STD = np.array(IMAGE_STD, dtype=np.float32)

#: transformers' stability fallback for single-mask output (mask decoder config defaults).
STABILITY_DELTA = 0.05
STABILITY_THRESHOLD = 0.98


#: Pillow modes of 16-bit (and 32-bit integer) samples, which `convert("RGB")` clips to white instead of scaling.
_WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def as_displayed_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a photo viewer shows the picture: EXIF orientation applied (a phone photo is stored
    sideways), 16-bit samples scaled to 8 bits (Pillow's conversion truncates them to almost white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_INTEGER_MODES:
        samples = np.asarray(image, dtype=np.float64)
        scale = 257.0 if samples.max(initial=0) <= 65535 else 16843009.0  # 2^16-1 or 2^32-1 onto 255
        image = Image.fromarray(np.clip(np.rint(samples / scale), 0, 255).astype(np.uint8), mode="L")
    return image.convert("RGB")


def nonzero_pixels(image: Image.Image) -> np.ndarray:
    """(H, W) bool of a mask picture, EXIF orientation applied: any nonzero sample is the object, at any bit depth
    (a 16-bit label map's 1 is not scaled away)."""
    image = ImageOps.exif_transpose(image)
    samples = np.asarray(image if image.mode in _WIDE_INTEGER_MODES else image.convert("L"))
    return samples != 0


def open_picture(path: Path, what: str = "image", decode: Callable[[Image.Image], T] = as_displayed_rgb) -> T:
    """Decode a picture file (default: as displayed, 8-bit RGB), or raise one line naming the file (undecodable,
    too large)."""
    try:
        with Image.open(path) as opened:
            return decode(opened)
    except Image.DecompressionBombError:
        raise EdgeTamExportError(
            f"{what} '{path}' has more than {2 * Image.MAX_IMAGE_PIXELS // 1_000_000} million pixels; downscale it"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise EdgeTamExportError(f"cannot decode {what} '{path}': not a readable picture file") from None


def load_image(image: str | Path | Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image, as displayed, from a path, a PIL image or an HxWx3 uint8 array."""
    if isinstance(image, Image.Image):
        return as_displayed_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EdgeTamExportError(f"an image array must be HxWx3 uint8, got {image.shape} {image.dtype}")
        return Image.fromarray(image)
    path = Path(image)
    if path.is_dir():
        raise EdgeTamExportError(f"image '{path}' is a folder; pass one picture file (for frames, use 'track')")
    if not path.is_file():
        raise EdgeTamExportError(f"image '{path}' does not exist")
    return open_picture(path)


def resized_pixels(image: Image.Image, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 RGB values 0..255, resized as Sam2ImageProcessor resizes."""
    resized = np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.float32)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None])


def preprocess_image(image: Image.Image, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 pixel values, as Sam2ImageProcessor makes them."""
    pixels = resized_pixels(image, size)
    return (pixels - IMAGENET_MEAN.reshape(1, 3, 1, 1) * 255.0) / (IMAGENET_STD.reshape(1, 3, 1, 1) * 255.0)


def image_encoder_inputs(image: Image.Image, spec: StageSpec) -> dict[str, np.ndarray]:
    """The image encoder's input for a picture: normalized `pixel_values`, or the resized 0..255 RGB
    pixels of a stage exported with an image input (normalization inside, as a camera frame arrives)."""
    size = spec.inputs[0].shape[-1]
    if spec.input_names == [IMAGE_INPUT]:
        return {IMAGE_INPUT: resized_pixels(image, size)}
    return {"pixel_values": preprocess_image(image, size)}


def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of PyTorch's bilinear interpolation weights (align_corners=False, no antialias)."""
    # Same float32 arithmetic as PyTorch's area_pixel_compute_source_index.
    scale = np.float32(in_size) / np.float32(out_size)
    source = np.maximum((np.arange(out_size, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5), 0)
    low = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    frac = (source - low).astype(np.float32)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    np.add.at(weights, (np.arange(out_size), low), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), high), frac)
    return weights


def antialiased_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out, in) matrix of PyTorch's antialiased bilinear interpolation (align_corners=False), the
    resize transformers applies to mask prompts: a triangle filter widened by the downscale factor,
    renormalized where it crosses the border. Rounded in float32 where PyTorch's kernel rounds."""
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    support = scale if scale >= 1.0 else f32(1.0)
    inverse = f32(1.0) / scale if scale >= 1.0 else f32(1.0)
    weights = np.zeros((out_size, in_size), dtype=np.float32)
    for i in range(out_size):
        center = f32(float(scale) * (i + 0.5))
        low = max(int(float(center) - float(support) + 0.5), 0)  # int() truncates toward zero, as C++ does
        high = min(int(float(center) + float(support) + 0.5), in_size)
        offsets = (np.arange(low, high, dtype=np.float32) - center).astype(np.float64) + 0.5
        taps = np.maximum(f32(1.0) - np.abs((offsets * float(inverse)).astype(np.float32)), f32(0.0))
        total = f32(0.0)
        for tap in taps:
            total = f32(total + tap)
        if total != 0:
            weights[i, low:high] = taps / total
    return weights


def resize_antialiased(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (..., h, w) values to (..., height, width) as `interpolate(..., antialias=True)` does."""
    rows = antialiased_weights(values.shape[-2], height)
    cols = antialiased_weights(values.shape[-1], width)
    return np.matmul(np.matmul(rows, values.astype(np.float32)), cols.T)


def resize_logits(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly resize (..., h, w) logits to (..., height, width)."""
    rows = bilinear_weights(logits.shape[-2], height)
    cols = bilinear_weights(logits.shape[-1], width)
    return np.matmul(np.matmul(rows, logits.astype(np.float32)), cols.T)


def stability_scores(
    logits: np.ndarray, delta: float = STABILITY_DELTA, threshold: float = 0.0, empty: float = 1.0
) -> np.ndarray:
    """IoU between the masks at threshold + delta and threshold - delta over the last two axes; `empty` where both
    are empty (the decoder's fallback counts that as stable, mask generation drops it)."""
    flat = logits.reshape(*logits.shape[:-2], -1)
    inner = (flat > threshold + delta).sum(-1).astype(np.float32)
    outer = (flat > threshold - delta).sum(-1).astype(np.float32)
    return np.where(outer > 0, inner / np.maximum(outer, 1.0), np.float32(empty))


def mask_tokens(mask_logits: np.ndarray, iou_scores: np.ndarray, multimask: np.ndarray | bool) -> np.ndarray:
    """The decoder token whose mask each object gets, as transformers picks it: the best-scored of tokens 1..3 with
    multimask output; else token 0 (single mask) unless it is unstable, then the best multimask token."""
    best = iou_scores[:, 1:].argmax(axis=1) + 1
    stable = stability_scores(mask_logits[:, 0]) >= STABILITY_THRESHOLD
    return np.where(multimask, best, np.where(stable, 0, best))


def select_masks(
    mask_logits: np.ndarray, iou_scores: np.ndarray, multimask_output: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The masks an image prompt returns: all of tokens 1..3 (ranked later by score) for multimask output, else the
    one `mask_tokens` picks. Returns (logits, scores, token indices), each with a masks axis."""
    objects = np.arange(mask_logits.shape[0])
    if multimask_output:
        tokens = np.tile(np.arange(1, 4), (len(objects), 1))
    else:
        tokens = mask_tokens(mask_logits, iou_scores, False)[:, None]
    return mask_logits[objects[:, None], tokens], iou_scores[objects[:, None], tokens], tokens


def select_for_tracking(decoded: dict[str, np.ndarray], multimask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask logits, object pointer) per object on a video frame: the mask `mask_tokens` picks; the pointer of the
    best multimask token with multimask output, else always token 0's (transformers keeps it for a single mask)."""
    logits, ious, pointers = decoded["mask_logits"], decoded["iou_scores"], decoded["object_pointers"]
    rows = np.arange(len(logits))
    pointer_token = np.where(multimask, ious[:, 1:].argmax(axis=1) + 1, 0)
    return logits[rows, mask_tokens(logits, ious, multimask)], pointers[rows, pointer_token]


def check_points(xy: np.ndarray, width: int, height: int, picture: str = "image") -> None:
    """Refuse non-finite coordinates and points outside the picture, naming the valid range."""
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(xy).all():
        raise EdgeTamExportError(f"prompt {xy.tolist()} has a coordinate that is not a finite number")
    outside = (xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)
    if outside.any():
        raise EdgeTamExportError(
            f"prompt {xy[outside].tolist()} lies outside the {width}x{height} {picture}; give pixel coordinates "
            f"with 0 <= x <= {width} and 0 <= y <= {height}"
        )


def check_box(box: np.ndarray | tuple, width: int, height: int, picture: str = "image") -> None:
    """A box is x0, y0, x1, y1 inside the picture with x1 > x0 and y1 > y0 (a box of no area covers nothing)."""
    corners = np.asarray(box, dtype=np.float64).reshape(-1)
    if corners.shape != (4,):
        raise EdgeTamExportError(f"a box needs 4 numbers x0,y0,x1,y1, got {corners.tolist()}")
    check_points(corners.reshape(2, 2), width, height, picture)
    if corners[2] <= corners[0] or corners[3] <= corners[1]:
        raise EdgeTamExportError(
            f"box {corners.tolist()} must be x0,y0,x1,y1 with x1 > x0 and y1 > y0 (a box with an area)"
        )


def check_labels(labels: np.ndarray | list, allowed: tuple[int, ...] = (POSITIVE_LABEL, NEGATIVE_LABEL)) -> np.ndarray:
    """Point labels as int32, refusing anything but whole numbers from `allowed` (0.5 is not a label)."""
    values = np.asarray(labels, dtype=np.float64).reshape(-1)
    if not (np.isfinite(values).all() and (values == np.round(values)).all() and set(values.astype(int)) <= set(allowed)):
        raise EdgeTamExportError(
            f"point labels must be 1 (positive) or 0 (negative), got {values.tolist()}"
        )
    return values.astype(np.int32)


@dataclass
class ObjectPrompt:
    """One object's clicks and box on one picture or video frame, in its original pixels: the one prompt type of the
    runtime (predictor, tracker, `segment`, `track`), validated and packed in one place."""

    points: np.ndarray  # (k, 2) float, may be empty
    labels: np.ndarray  # (k,) int; PADDING_POINT_LABEL marks transformers-style padding points
    box: np.ndarray | None = None  # (4,) x0, y0, x1, y1

    @classmethod
    def of(cls, points: Sequence | None = None, labels: Sequence | None = None,
           box: Sequence | None = None) -> ObjectPrompt:
        """From plain sequences: (x, y) clicks, their labels (1 or 0; default all positive), a box (x0, y0, x1, y1)."""
        xy = np.asarray(points if points is not None else [], np.float32).reshape(-1, 2)
        lab = check_labels(labels if labels is not None else [POSITIVE_LABEL] * len(xy))
        if len(lab) != len(xy):
            raise EdgeTamExportError(f"{len(xy)} points but {len(lab)} labels: give one label per point")
        return cls(xy, lab, None if box is None else np.asarray(box, np.float32).reshape(-1))

    @property
    def point_count(self) -> int:
        """Clicks plus two box corners: what transformers' multimask rule counts."""
        return len(self.labels) + (2 if self.box is not None else 0)

    def validate(self, width: int, height: int, picture: str = "image") -> None:
        real = self.points[self.labels != PADDING_POINT_LABEL] if len(self.points) else self.points
        check_points(real, width, height, picture)
        if self.box is not None:
            check_box(self.box, width, height, picture)
        check_labels(self.labels, allowed=(POSITIVE_LABEL, NEGATIVE_LABEL, PADDING_POINT_LABEL))

    def tokens(self, scale_x: float, scale_y: float, box_first: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(coords, labels) of the decoder tokens for this prompt, exactly as transformers builds them: clicks and the
        box corners (the image model puts clicks first, the video model the box, `box_first`), then one not-a-point
        token (two for a prompt of neither: a mask-only prompt or a tracked frame)."""
        coords = [self.points.reshape(-1, 2).astype(np.float32)]
        labels = [self.labels.astype(np.int32)]
        if self.box is not None:
            corners = (self.box.reshape(2, 2).astype(np.float32), np.array(BOX_CORNER_LABELS, dtype=np.int32))
            coords.insert(0 if box_first else 1, corners[0])
            labels.insert(0 if box_first else 1, corners[1])
        if not len(self.points) and self.box is None:
            coords.append(np.zeros((1, 2), np.float32))
            labels.append(np.array([NOT_A_POINT_LABEL], np.int32))
        coords.append(np.zeros((1, 2), np.float32))
        labels.append(np.array([NOT_A_POINT_LABEL], np.int32))
        coords_all, labels_all = np.concatenate(coords), np.concatenate(labels)
        scale = np.array([scale_x, scale_y], dtype=np.float32)
        real = (labels_all != NOT_A_POINT_LABEL) & (labels_all != PADDING_POINT_LABEL)
        coords_all = np.where(real[:, None], coords_all * scale, coords_all)
        return coords_all.astype(np.float32), labels_all


def group_prompts(
    clicks: Sequence[tuple[Hashable, float, float, int]], boxes: Sequence[tuple[Hashable, Sequence[float]]],
    name: Callable[[Hashable], str],
) -> dict[Hashable, ObjectPrompt]:
    """Clicks (key, x, y, label) and boxes (key, x0..y1) as one `ObjectPrompt` per key (an object, or an object on a
    frame), in first-seen order; `name(key)` names the object in the one-line error for two boxes of one key."""
    points: dict[Hashable, list] = {}
    box_of: dict[Hashable, Sequence[float]] = {}
    for key, x, y, label in clicks:
        points.setdefault(key, []).append((x, y, label))
    for key, box in boxes:
        if key in box_of:
            raise EdgeTamExportError(f"{name(key)} has several boxes; give each box its own object")
        box_of[key] = box
    return {key: ObjectPrompt.of([(x, y) for x, y, _ in points.get(key, [])], [label for *_, label in points.get(key, [])],
                                 box_of.get(key))
            for key in dict.fromkeys([*points, *box_of])}


def pack_slots(
    prompts: list[ObjectPrompt], slots: int, scale_x: float, scale_y: float, box_first: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(objects, slots, 2) coordinates and (objects, slots) labels, unused slots marked empty."""
    coords = np.zeros((len(prompts), slots, 2), dtype=np.float32)
    labels = np.full((len(prompts), slots), EMPTY_SLOT_LABEL, dtype=np.int32)
    for i, prompt in enumerate(prompts):
        xy, lab = prompt.tokens(scale_x, scale_y, box_first)
        if len(lab) > slots:
            raise EdgeTamExportError(
                f"object {i} needs {len(lab)} prompt slots (clicks + 2 per box + 1), the bundle has {slots}; "
                "use fewer clicks or re-export with a larger --point-slots"
            )
        coords[i, : len(lab)] = xy
        labels[i, : len(lab)] = lab
    return coords, labels
