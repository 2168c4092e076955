"""Quality gates of whole uses, beyond stage-by-stage parity: the documentation's image examples and a
tracking session, run through the bundle's runtime and through transformers on the same weights.

Reduced-precision recipes declare them (`[parity] min_example_iou`, `[tracking_gate]`): a quantized
stage can keep a 0.99 cosine and still flip the masks users see, which only these catch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from edgetam_export.verification.parity import mask_iou
from edgetam_export.progress import Progress
from edgetam_export.recipes import TrackingGate
from edgetam_export.reference import Reference
from edgetam_export.runtime.predictor import EdgeTamPredictor
from edgetam_export.runtime.tracker import EdgeTamTracker
from edgetam_export.verification.sample_data import bedroom_frames
from edgetam_export.verification.samples import load_images
from edgetam_export.verification.tracking_parity import Prompt, Propagate, Run, compare_tracking, run_reference

#: The reference side of tracking gates, per (weights, frames, script): an export whose quantized stage falls back
#: to float checks the gate again, and transformers' side of a 200-frame session is most of the gate's time.
_REFERENCE_SESSIONS: dict[tuple[str, tuple[str, ...], str], list] = {}


@dataclass(frozen=True)
class DocExample:
    """One example of the transformers EdgeTAM documentation: an image and its prompts (image pixels)."""

    name: str
    image: str
    points: list | None = None
    labels: list | None = None
    boxes: list | None = None
    multimask_output: bool = True


#: The documentation's image-mode examples (../shared/reference), on the shared pictures.
DOC_EXAMPLES = (
    DocExample("single click", "truck", points=[[[500, 375]]], labels=[[1]]),
    DocExample("two clicks on one object", "truck", points=[[[500, 375], [1125, 625]]], labels=[[1, 1]]),
    DocExample("box", "truck", boxes=[[75, 275, 1725, 850]]),
    DocExample("two objects", "truck", points=[[[500, 375]], [[650, 750]]], labels=[[1], [1]], multimask_output=False),
    DocExample("four boxes", "groceries", multimask_output=False,
               boxes=[[450, 170, 520, 350], [350, 190, 450, 350], [500, 170, 580, 350], [580, 170, 640, 350]]),
)


@dataclass
class ExampleParity:
    name: str
    mask_iou: float
    worst_single_mask_iou: float
    passed: bool


def check_examples(reference: Reference, bundle_path: Path, data_dir: Path, min_iou: float) -> list[ExampleParity]:
    """Every documentation example: each mask of each object at the image's size, bundle vs reference."""
    predictor = EdgeTamPredictor.from_bundle(bundle_path)
    names = ("truck", "groceries")
    images = dict(zip(names, load_images([data_dir / "images" / f"{name}.jpg" for name in names])))
    results = []
    for example in DOC_EXAMPLES:
        image = images[example.image]
        prompts = {}
        if example.points is not None:
            prompts |= {"input_points": [example.points], "input_labels": [example.labels]}
        if example.boxes is not None:
            prompts["input_boxes"] = [example.boxes]
        inputs = reference.processor(images=image, return_tensors="pt", **prompts)
        with torch.no_grad():
            outputs = reference.image_model(**inputs, multimask_output=example.multimask_output)
        expected = reference.processor.post_process_masks(outputs.pred_masks, inputs["original_sizes"])[0].numpy()
        prediction = predictor.predict(predictor.set_image(image), points=example.points, labels=example.labels,
                                       boxes=example.boxes, multimask_output=example.multimask_output)
        # As the decoder's parity: IoU over all masks of the example together (every object, every
        # multimask candidate); the worst single mask is reported beside it.
        iou = mask_iou(expected, prediction.masks)
        worst = min(mask_iou(expected[i, k], prediction.masks[i, k])
                    for i in range(prediction.masks.shape[0]) for k in range(prediction.masks.shape[1]))
        results.append(ExampleParity(example.name, iou, worst, iou >= min_iou))
    return results


def tracking_gate_script(objects: int) -> list:
    """Objects prompted one by one on frame 0 (a click, a box, clicks), then tracked through the clip."""
    prompts = [Prompt(0, 1, ((210, 350),), (1,)), Prompt(0, 2, box=(500, 150, 800, 450)),
               Prompt(0, 3, ((700, 300), (650, 350)), (1, 0)), Prompt(0, 4, ((850, 450),), (1,))]
    script: list = []
    for prompt in prompts[:objects]:
        script += [prompt, Run(0)]
    return script + [Propagate(0)]


def check_tracking(reference: Reference, bundle_path: Path, data_dir: Path, gate: TrackingGate,
                   progress: Callable[[str], None] | None = None) -> dict:
    """The gate's session on the bedroom clip; per-frame mask IoU and object presence against transformers.
    `progress` hears how many frame results of both sides are done (the script gives one per object on frame 0,
    then one per frame)."""
    paths = bedroom_frames(data_dir)[: gate.frames]
    frames = load_images(paths)
    tracker = EdgeTamTracker.from_bundle(bundle_path)
    script = tracking_gate_script(gate.objects)
    key = (reference.weights_hash(), tuple(str(p.resolve()) for p in paths), repr(script))
    cached = _REFERENCE_SESSIONS.get(key)
    counter = Progress("gate: tracking result", (1 if cached else 2) * (gate.objects + len(frames)), progress,
                       interval=10.0)
    if cached is None:
        cached = _REFERENCE_SESSIONS[key] = run_reference(reference, frames, script, counter)
    parity = compare_tracking(reference, tracker, frames, script, counter, expected=cached)
    figures = {
        "frames": len(frames),
        "objects": gate.objects,
        "mean_iou": float(np.mean([v for entry in parity.ious for v in entry.values()])),
        "min_iou": parity.min_iou,
        "presence_agreement": parity.presence_agreement,
        "min_logit_psnr_db": round(parity.min_logit_psnr, 2),
    }
    failures = []
    if figures["mean_iou"] < gate.min_mean_iou:
        failures.append(f"mean mask IoU {figures['mean_iou']:.4f} < {gate.min_mean_iou}")
    if figures["min_iou"] < gate.min_iou:
        failures.append(f"minimum mask IoU {figures['min_iou']:.4f} < {gate.min_iou}")
    if figures["presence_agreement"] < gate.min_presence_agreement:
        failures.append(f"object presence agrees on {figures['presence_agreement']:.2%} of frames "
                        f"< {gate.min_presence_agreement:.0%}")
    return figures | {"gate": asdict(gate), "failures": failures, "passed": not failures}
