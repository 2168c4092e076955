"""What a person and a script read back: mask PNGs, overlays and the result JSON of `segment`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edgetam_export.bundle import Bundle
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.processing import nonzero_pixels, open_picture
from edgetam_export.safe_output import SEGMENTATION, staged_output, write_text_atomic

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
    return open_picture(path, "mask", nonzero_pixels)


def overlay(
    image: Image.Image,
    masks: list[np.ndarray | None],
    points: list[tuple[float, float, int, int]] | None = None,
    boxes: list[tuple[float, float, float, float, int]] | None = None,
    names: list[str] | None = None,
    caption: str | None = None,
) -> Image.Image:
    """The image with mask i tinted and outlined in colour i (None: the object has no mask here), the
    prompts of object i in its colour (clicks: filled for positive, a ring with a cross for negative)
    and, with `names`, a legend naming each colour under an optional `caption` line. Points are (x, y, label, object), boxes
    (x0, y0, x1, y1, object)."""
    canvas = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, mask in enumerate(masks):
        if mask is None:
            continue
        tint = np.array(colour(index), dtype=np.float32)
        canvas[mask] = 0.45 * canvas[mask] + 0.55 * tint
        edge = mask ^ _eroded(mask)
        canvas[edge] = tint
    picture = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    radius = max(4, min(picture.size) // 120)
    for x, y, label, obj in points or []:
        circle = (x - radius, y - radius, x + radius, y + radius)
        if label == 1:
            draw.ellipse(circle, fill=colour(obj), outline=(255, 255, 255), width=2)
        else:
            draw.ellipse(circle, fill=(0, 0, 0), outline=colour(obj), width=max(2, radius // 2))
            draw.line((x - radius, y - radius, x + radius, y + radius), fill=(255, 255, 255), width=2)
            draw.line((x - radius, y + radius, x + radius, y - radius), fill=(255, 255, 255), width=2)
    for x0, y0, x1, y1, obj in boxes or []:
        draw.rectangle((x0, y0, x1, y1), outline=colour(obj), width=max(2, radius // 2))
    if names or caption:
        _legend(draw, names or [], radius, caption)
    return picture


def _legend(draw: ImageDraw.ImageDraw, names: list[str], size: int, caption: str | None = None) -> None:
    """A colour swatch and a name per object, top left, on a dark band so it reads on any frame; the caption first."""
    font = ImageFont.load_default(size=2 * size)
    line = 2 * size + 6
    rows = ([caption] if caption else []) + names
    width = max(draw.textlength(row, font=font) for row in rows) + 2 * size + 20
    draw.rectangle((4, 4, 4 + width, 8 + line * len(rows)), fill=(0, 0, 0))
    if caption:
        draw.text((10, 8 + size), caption, fill=(255, 200, 0), anchor="lm", font=font)
    for index, name in enumerate(names):
        top = 8 + (index + bool(caption)) * line
        draw.rectangle((10, top, 10 + 2 * size, top + 2 * size), fill=colour(index))
        draw.text((16 + 2 * size, top + size), name, fill=(255, 255, 255), anchor="lm", font=font)


def _eroded(mask: np.ndarray) -> np.ndarray:
    """A one-pixel erosion, to draw outlines without SciPy."""
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return inner


def weights_facts(bundle: Bundle) -> dict:
    """The `weights` entry of result.json / summary.json, and a `warning` when the bundle has random weights."""
    notice = bundle.manifest.model.random_weights_notice()
    return {"weights": bundle.manifest.model.source} | ({"warning": notice} if notice else {})


def write_segmentation(
    out: Path,
    picture: Image.Image,
    objects: list[tuple[np.ndarray, np.ndarray]],
    points: list[tuple[float, float, int, int]],
    boxes: list[tuple[float, float, float, float, int]],
    summary: dict,
) -> dict:
    """Write each object's masks (best score first) as `masks/{object}_{k}.png`, the overlay of every
    object's best mask as `overlay.png`, and `result.json` listing every mask; return the result.

    The folder is written whole or not at all, and replaces only an earlier segmentation result."""
    with staged_output(out, SEGMENTATION) as staging:
        (staging / "masks").mkdir()
        records = []
        for index, (masks, scores) in enumerate(objects):
            for rank, order in enumerate(np.argsort(-scores, kind="stable")):
                name = f"masks/{index}_{rank}.png"
                save_mask(masks[order], staging / name)
                records.append({"object": index, "rank": rank, "score": round(float(scores[order]), 6), "file": name,
                                "area": int(masks[order].sum())})
        best = [masks[int(np.argmax(scores))] for masks, scores in objects]
        names = [f"object {index}" for index in range(len(objects))] if summary.get("mode") != "automatic" else None
        caption = "random weights: not a real segmentation" if "warning" in summary else None
        overlay(picture, best, points, boxes, names, caption).save(staging / "overlay.png")
        result = summary | {"overlay": "overlay.png", "masks": records}
        write_text_atomic(staging / "result.json", json.dumps(result, indent=2) + "\n")
    return result
