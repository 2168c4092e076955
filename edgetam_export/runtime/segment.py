"""`segment`: prompts or automatic mask generation on one image, written to a folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.progress import Progress
from edgetam_export.runtime.automatic import MaskGenerationSettings, generate_masks
from edgetam_export.runtime.outputs import weights_facts, write_segmentation
from edgetam_export.runtime.predictor import EdgeTamPredictor
from edgetam_export.runtime.processing import load_image
from edgetam_export.safe_output import SEGMENTATION, check_target


@dataclass(frozen=True)
class PointPrompt:
    obj: int
    x: float
    y: float
    label: int = 1


@dataclass(frozen=True)
class BoxPrompt:
    obj: int
    x0: float
    y0: float
    x1: float
    y1: float


def segment_image(
    bundle: str | Path,
    image: str | Path,
    out: str | Path,
    points: list[PointPrompt] = (),
    boxes: list[BoxPrompt] = (),
    multimask: bool | None = None,
    automatic: MaskGenerationSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Segment an image and write masks, overlay and result.json to `out`; return the result.

    Objects are numbered by the prompts' object indices (0, 1, ...). `multimask=None` returns the 3
    multimask outputs for a single object and one mask per object for several, as the docs do.
    """
    out = Path(out)
    check_target(out, SEGMENTATION)
    picture = load_image(image)
    predictor = EdgeTamPredictor.from_bundle(bundle)
    started = time.perf_counter()
    if automatic is not None:
        if points or boxes:
            raise EdgeTamExportError("--auto segments everything: give no --point or --box with it")
        counter = Progress("segment: prompts", 0, progress)

        def report(done: int, total: int) -> None:
            counter.total = total
            counter.advance(done - counter.done)

        generated = generate_masks(predictor, picture, automatic, report)
        objects = [(mask[None], np.array([score])) for mask, score in zip(generated.masks, generated.scores)]
        mode = "automatic"
    else:
        ids = sorted({p.obj for p in points} | {b.obj for b in boxes})
        if not ids:
            raise EdgeTamExportError("no prompt given: pass --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --auto")
        if ids != list(range(len(ids))):
            raise EdgeTamExportError(f"object indices must run 0, 1, 2, ... without gaps; got {ids}")
        for obj in ids:
            if sum(b.obj == obj for b in boxes) > 1:
                raise EdgeTamExportError(f"object {obj} has several boxes; give each box its own object")
        multimask = len(ids) == 1 if multimask is None else multimask
        embedding = predictor.set_image(picture)
        box_of = {b.obj: [b.x0, b.y0, b.x1, b.y1] for b in boxes}
        has_box = [obj in box_of for obj in ids]
        if any(has_box) and not all(has_box):
            # transformers decodes boxes and clicks per call; objects without a box go in their own call.
            raise EdgeTamExportError("give every object a box, or none: mixing boxed and unboxed objects is ambiguous")
        prediction = predictor.predict(
            embedding,
            points=[[(p.x, p.y) for p in points if p.obj == obj] for obj in ids] if points else None,
            labels=[[p.label for p in points if p.obj == obj] for obj in ids] if points else None,
            boxes=[box_of[obj] for obj in ids] if boxes else None,
            multimask_output=multimask,
        )
        objects = [(prediction.masks[i], prediction.scores[i]) for i in range(len(ids))]
        mode = "multimask" if multimask else "single-mask"
    elapsed = time.perf_counter() - started
    summary = {
        "image": str(image),
        "size": {"width": picture.width, "height": picture.height},
        "bundle": str(bundle),
        "backend": predictor.bundle.backend,
        "mode": mode,
        "objects": len(objects),
        "seconds": round(elapsed, 3),
    } | weights_facts(predictor.bundle)
    return write_segmentation(
        out, picture, objects, [(p.x, p.y, p.label, p.obj) for p in points],
        [(b.x0, b.y0, b.x1, b.y1, b.obj) for b in boxes], summary,
    )
