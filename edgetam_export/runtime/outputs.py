"""What a person and a script read back: mask PNGs, overlays and the result JSON of `segment`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from edgetam_export.errors import EdgeTamExportError

#: Distinct, colour-blind-friendly colours (Okabe-Ito), cycled per object.
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (153, 153, 153)]


def colour(index: int) -> tuple[int, int, int]:
    return PALETTE[index % len(PALETTE)]


def save_mask(mask: np.ndarray, path: Path) -> None:
    """A mask as an 8-bit PNG, 0 outside and 255 inside, at the mask's (original image) size."""
    Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L").save(path)


def load_mask(path: Path) -> np.ndarray:
    """A mask PNG (or any picture) as a boolean array: nonzero pixels are the object."""
    if not path.is_file():
        raise EdgeTamExportError(f"mask '{path}' does not exist")
    try:
        with Image.open(path) as opened:
            return np.asarray(opened.convert("L")) > 0
    except (OSError, ValueError):
        raise EdgeTamExportError(f"cannot decode mask '{path}': not a readable picture file") from None


def overlay(
    image: Image.Image,
    masks: list[np.ndarray],
    points: list[tuple[float, float, int]] | None = None,
    boxes: list[tuple[float, float, float, float]] | None = None,
) -> Image.Image:
    """The image with each mask tinted in its own colour and outlined, plus the prompts drawn on top."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, mask in enumerate(masks):
        tint = np.array(colour(index), dtype=np.float32)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * tint
        edge = mask ^ _eroded(mask)
        canvas[edge] = tint
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(4, min(picture.size) // 120)
    for x, y, label in points or []:
        fill = (40, 200, 40) if label == 1 else (220, 40, 40)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(255, 255, 255), width=2)
    for x0, y0, x1, y1 in boxes or []:
        draw.rectangle((x0, y0, x1, y1), outline=(255, 255, 255), width=max(2, radius // 2))
    return picture


def _eroded(mask: np.ndarray) -> np.ndarray:
    """A one-pixel erosion, to draw outlines without SciPy."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def prepare_folder(out: Path) -> None:
    try:
        (out / "masks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeTamExportError(f"cannot write to '{out}' ({exc.strerror}); choose another --out") from None


def write_segmentation(
    out: Path,
    picture: Image.Image,
    objects: list[tuple[np.ndarray, np.ndarray]],
    points: list[tuple[float, float, int]],
    boxes: list[tuple[float, float, float, float]],
    summary: dict,
) -> dict:
    """Write each object's masks (best score first) as `masks/{object}_{k}.png`, the overlay of every
    object's best mask as `overlay.png`, and `result.json` listing every mask; return the result."""
    prepare_folder(out)
    records = []
    for index, (masks, scores) in enumerate(objects):
        for rank, order in enumerate(np.argsort(-scores, kind="stable")):
            name = f"masks/{index}_{rank}.png"
            save_mask(masks[order], out / name)
            records.append({"object": index, "rank": rank, "score": round(float(scores[order]), 6), "file": name,
                            "area": int(masks[order].sum())})
    best = [masks[int(np.argmax(scores))] for masks, scores in objects]
    overlay(picture, best, points, boxes).save(out / "overlay.png")
    result = summary | {"overlay": "overlay.png", "masks": records}
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
