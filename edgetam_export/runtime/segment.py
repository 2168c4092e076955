"""`segment`: prompts or automatic mask generation on one image, written to a folder."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.progress import Progress
from edgetam_export.runtime.automatic import MaskGenerationSettings, generate_masks
from edgetam_export.runtime.outputs import weights_facts, write_segmentation
from edgetam_export.runtime.predictor import EdgeTamPredictor
from edgetam_export.runtime.processing import ObjectPrompt, load_image
from edgetam_export.safe_output import SEGMENTATION, check_target


def segment_image(
    bundle: str | Path,
    image: str | Path,
    out: str | Path,
    prompts: dict[int, ObjectPrompt] | None = None,
    multimask: bool | None = None,
    automatic: MaskGenerationSettings | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Segment an image and write masks, overlay and result.json to `out`; return the result.

    `prompts` maps object indices (0, 1, ... without gaps) to their clicks and box in image pixels.
    `multimask=None` returns the 3 multimask outputs for a single object and one mask per object for several, as
    the docs do.
    """
    out = Path(out)
    check_target(out, SEGMENTATION)
    picture = load_image(image)
    predictor = EdgeTamPredictor.from_bundle(bundle)
    started = time.perf_counter()
    prompts = prompts or {}
    if automatic is not None:
        if prompts:
            raise EdgeTamExportError("--auto segments everything: give no --point or --box with it")
        counter = Progress("segment: prompts", 0, progress)

        def report(done: int, total: int) -> None:
            counter.total = total
            counter.advance(done - counter.done)

        generated = generate_masks(predictor, picture, automatic, report)
        objects = [(mask[None], np.array([score])) for mask, score in zip(generated.masks, generated.scores)]
        mode = "automatic"
    else:
        ids = sorted(prompts)
        if not ids:
            raise EdgeTamExportError("no prompt given: pass --point X,Y[,LABEL], --box X0,Y0,X1,Y1 or --auto")
        if ids != list(range(len(ids))):
            raise EdgeTamExportError(f"object indices must run 0, 1, 2, ... without gaps; got {ids}")
        ordered = [prompts[obj] for obj in ids]
        has_box = [prompt.box is not None for prompt in ordered]
        if any(has_box) and not all(has_box):
            # transformers decodes boxes and clicks per call; objects without a box go in their own call.
            raise EdgeTamExportError("give every object a box, or none: mixing boxed and unboxed objects is ambiguous")
        multimask = len(ids) == 1 if multimask is None else multimask
        clicked = any(len(prompt.points) for prompt in ordered)
        prediction = predictor.predict(
            predictor.set_image(picture),
            points=[prompt.points.tolist() for prompt in ordered] if clicked else None,
            labels=[prompt.labels.tolist() for prompt in ordered] if clicked else None,
            boxes=[prompt.box.tolist() for prompt in ordered] if any(has_box) else None,
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
        out, picture, objects,
        [(float(x), float(y), int(label), obj) for obj, p in prompts.items() for (x, y), label in zip(p.points, p.labels)],
        [(*map(float, p.box), obj) for obj, p in prompts.items() if p.box is not None], summary,
    )
