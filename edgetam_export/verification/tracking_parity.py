"""Video parity: play one script of prompts and propagations through transformers' EdgeTamVideoModel and
through a bundle's EdgeTamTracker, and compare the masks of every object on every frame."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgetam_export.verification.parity import mask_iou, psnr_db
from edgetam_export.progress import Progress
from edgetam_export.reference import Reference, build_video_processor
from edgetam_export.runtime.tracker import EdgeTamTracker


@dataclass(frozen=True)
class Prompt:
    frame: int
    obj_id: int
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class MaskInput:
    """A mask prompt: the ellipse (cx, cy, rx, ry) in video pixels, or None for an empty mask."""

    frame: int
    obj_id: int
    ellipse: tuple[float, float, float, float] | None

    def mask(self, width: int, height: int) -> np.ndarray:
        if self.ellipse is None:
            return np.zeros((height, width), bool)
        cx, cy, rx, ry = self.ellipse
        y, x = np.mgrid[0:height, 0:width]
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


@dataclass(frozen=True)
class Run:
    frame: int


@dataclass(frozen=True)
class Propagate:
    start: int | None = None
    max_frames: int | None = None
    reverse: bool = False


Step = Prompt | MaskInput | Run | Propagate


@contextlib.contextmanager
def consistent_mask_prompt_scores(model: torch.nn.Module) -> Iterator[None]:
    """Work around a transformers bug: a mask-prompted object's object_score_logits come out (1, 1)
    instead of the decoder's (1, 1, 1), so a frame reporting it with another object fails in
    `torch.cat` ("Tensors must have same number of dimensions"). Only the shape is changed."""
    original = model._use_mask_as_output

    def use_mask_as_output(*args, **kwargs):
        output = original(*args, **kwargs)
        output.object_score_logits = output.object_score_logits[..., None]
        return output

    model._use_mask_as_output = use_mask_as_output
    try:
        yield
    finally:
        del model._use_mask_as_output


@dataclass
class FrameOutput:
    """One frame result of one side: its index, and per object the low-resolution mask logits, the
    object score logit and the binary mask at the video's size."""

    frame: int
    logits: dict[int, np.ndarray]
    scores: dict[int, float]
    masks: dict[int, np.ndarray]


def run_reference(reference: Reference, frames: list[Image.Image], script: list[Step],
                  counter: Progress | None = None) -> list[FrameOutput]:
    """Every frame result of transformers' video session and propagation (each one counted on `counter`)."""
    processor = build_video_processor(reference.image_size)
    model = reference.video_model
    session = processor.init_video_session(video=frames, inference_device="cpu")
    size = [[session.video_height, session.video_width]]
    events: list[FrameOutput] = []

    def record(output) -> None:
        masks = processor.post_process_masks([output.pred_masks], original_sizes=size, binarize=False)[0]
        scores = output.object_score_logits.reshape(len(output.object_ids)).tolist()
        events.append(FrameOutput(
            frame=int(output.frame_idx),
            logits={obj: output.pred_masks[i, 0].numpy() for i, obj in enumerate(output.object_ids)},
            scores=dict(zip(output.object_ids, scores)),
            masks={obj: (masks[i, 0] > 0).numpy() for i, obj in enumerate(output.object_ids)},
        ))
        if counter is not None:
            counter.advance(note=f"transformers, frame {int(output.frame_idx)}")

    with torch.inference_mode(), consistent_mask_prompt_scores(model):
        for step in script:
            if isinstance(step, Prompt):
                kwargs = {}
                if step.points:
                    kwargs |= {"input_points": [[[list(p) for p in step.points]]], "input_labels": [[list(step.labels)]]}
                if step.box is not None:
                    kwargs["input_boxes"] = [[list(step.box)]]
                processor.add_inputs_to_inference_session(
                    inference_session=session, frame_idx=step.frame, obj_ids=step.obj_id, **kwargs
                )
            elif isinstance(step, MaskInput):
                mask = step.mask(int(session.video_width), int(session.video_height))
                processor.add_inputs_to_inference_session(
                    inference_session=session, frame_idx=step.frame, obj_ids=step.obj_id, input_masks=mask
                )
            elif isinstance(step, Run):
                record(model(inference_session=session, frame_idx=step.frame))
            else:
                for output in model.propagate_in_video_iterator(
                    session, start_frame_idx=step.start, max_frame_num_to_track=step.max_frames, reverse=step.reverse
                ):
                    record(output)
    return events


def run_bundle(tracker: EdgeTamTracker, frames: list[Image.Image], script: list[Step],
               counter: Progress | None = None) -> list[FrameOutput]:
    """Every frame result of the bundle's tracker on the same script (each one counted on `counter`)."""
    session = tracker.init_session(frames)
    events: list[FrameOutput] = []

    def record(result) -> None:
        masks = result.masks()
        events.append(FrameOutput(
            frame=result.frame_idx,
            logits={obj: result.mask_logits[i] for i, obj in enumerate(result.obj_ids)},
            scores={obj: float(result.object_score_logits[i]) for i, obj in enumerate(result.obj_ids)},
            masks={obj: masks[i] for i, obj in enumerate(result.obj_ids)},
        ))
        if counter is not None:
            counter.advance(note=f"bundle, frame {result.frame_idx}")

    for step in script:
        if isinstance(step, Prompt):
            session.add_prompt(step.frame, step.obj_id, list(step.points) or None, list(step.labels) or None, step.box)
        elif isinstance(step, MaskInput):
            session.add_mask(step.frame, step.obj_id, step.mask(session.frames.width, session.frames.height))
        elif isinstance(step, Run):
            record(session.run_frame(step.frame))
        else:
            for result in session.propagate(step.start, step.max_frames, step.reverse):
                record(result)
    return events


@dataclass
class TrackingParity:
    """Per frame result (one frame of a run or a propagation), per object: the IoU of the masks, the PSNR
    of the low-resolution logits and both object scores, against the reference."""

    frames: list[int] = field(default_factory=list)
    ious: list[dict[int, float]] = field(default_factory=list)
    logit_psnr: list[dict[int, float]] = field(default_factory=list)
    scores: list[dict[int, tuple[float, float]]] = field(default_factory=list)  # (reference, bundle)
    areas: list[dict[int, float]] = field(default_factory=list)

    @property
    def min_iou(self) -> float:
        return min(min(entry.values()) for entry in self.ious)

    @property
    def min_logit_psnr(self) -> float:
        return min(min(entry.values()) for entry in self.logit_psnr)

    @property
    def max_score_difference(self) -> float:
        return max(abs(a - b) for entry in self.scores for a, b in entry.values())

    @property
    def presence_agreement(self) -> float:
        """Share of (frame, object) results where both sides agree whether the object is present."""
        pairs = [(a > 0) == (b > 0) for entry in self.scores for a, b in entry.values()]
        return sum(pairs) / len(pairs)

    @property
    def median_area(self) -> float:
        """Median share of the frame the reference's masks cover: a mask of most of the frame would hide a
        wrong memory bank, so the test weights are calibrated to about 30% (`reference.calibrate_mask_area`)."""
        return float(np.median([a for entry in self.areas for a in entry.values()]))

    def to_json(self) -> dict:
        return {
            "events": len(self.frames),
            "min_iou": self.min_iou,
            "mean_iou": float(np.mean([v for entry in self.ious for v in entry.values()])),
            "min_logit_psnr_db": round(self.min_logit_psnr, 2),
            "max_object_score_difference": self.max_score_difference,
            "presence_agreement": self.presence_agreement,
            "reference_area_median": round(self.median_area, 4),
            "per_frame": [
                {"frame": f, "iou": {str(k): round(v, 6) for k, v in iou.items()},
                 "logit_psnr_db": {str(k): round(v, 2) for k, v in psnr.items()},
                 "object_score": {str(k): [round(a, 4), round(b, 4)] for k, (a, b) in score.items()},
                 "reference_area": {str(k): round(v, 4) for k, v in area.items()}}
                for f, iou, psnr, score, area in zip(self.frames, self.ious, self.logit_psnr, self.scores, self.areas)
            ],
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")


def compare_tracking(
    reference: Reference, tracker: EdgeTamTracker, frames: list[Image.Image], script: list[Step],
    counter: Progress | None = None, expected: list | None = None,
) -> TrackingParity:
    """Play the script on both sides; the frame indices and objects of every result must be the same.
    `counter` counts the frame results of both sides as they come (a 200-frame gate takes minutes); `expected`, the
    reference side of the same session when it was played already (`run_reference`)."""
    if expected is None:
        expected = run_reference(reference, frames, script, counter)
    got = run_bundle(tracker, frames, script, counter)
    if [e.frame for e in expected] != [g.frame for g in got]:
        raise AssertionError(
            f"frame order differs: reference {[e.frame for e in expected][:8]}..., bundle {[g.frame for g in got][:8]}..."
        )
    parity = TrackingParity()
    for ref, ours in zip(expected, got):
        if set(ref.masks) != set(ours.masks):
            raise AssertionError(f"frame {ref.frame}: objects {sorted(ours.masks)} != reference {sorted(ref.masks)}")
        parity.frames.append(ref.frame)
        parity.ious.append({obj: mask_iou(ours.masks[obj], ref.masks[obj]) for obj in ref.masks})
        parity.logit_psnr.append({obj: psnr_db(ref.logits[obj], ours.logits[obj]) for obj in ref.logits})
        parity.scores.append({obj: (ref.scores[obj], ours.scores[obj]) for obj in ref.scores})
        parity.areas.append({obj: float(ref.masks[obj].mean()) for obj in ref.masks})
    return parity


#: The scripted sessions of the parity suite, on the 200-frame bedroom clip (960x540).
SCRIPTS: dict[str, list[Step]] = {
    "one-object": [Prompt(0, 1, ((210, 350),), (1,)), Run(0), Propagate()],
    "three-objects-on-different-frames": [
        Prompt(0, 1, ((210, 350),), (1,)), Run(0), Propagate(0, 60),
        Prompt(60, 2, box=(500, 150, 800, 450)), Run(60), Propagate(60, 60),
        Prompt(120, 3, ((700, 300), (650, 350)), (1, 0)), Run(120), Propagate(120),
    ],
    "forward-then-reverse": [
        Prompt(100, 1, ((400, 250),), (1,)), Run(100), Propagate(100, 99),
        Propagate(100, 100, reverse=True),
    ],
    "mask-prompts": [
        MaskInput(0, 1, (230, 330, 60, 90)), Run(0), Prompt(0, 2, ((600, 300),), (1,)), Run(0), Propagate(0, 40),
        MaskInput(40, 1, (250, 320, 80, 70)), Run(40), MaskInput(40, 3, None), Run(40), Propagate(40, 40),
    ],
    "reverse-and-correction": [
        Prompt(150, 1, ((400, 250),), (1,)), Run(150), Propagate(150, 50, reverse=True),
        Prompt(110, 1, ((420, 260), (300, 200)), (1, 0)), Run(110), Propagate(110, 40),
    ],
}
