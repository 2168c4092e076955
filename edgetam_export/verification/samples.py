"""Realistic parity inputs for every stage, produced by running the reference on real images and frames.

Random tensors say little about an exported graph: the decoder needs real prompts (clicks, boxes,
mask prompts, empty slots), the memory stages need a bank filled the way tracking fills it. So each
case here chains transformers' own computations (`upstream`) from real pictures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.reference import Reference
from edgetam_export.verification.sample_data import bedroom_frames
from edgetam_export.runtime.processing import open_picture
from edgetam_export.runtime.memory_bank import BankLayout, Memory, Pointer, pack_bank
from edgetam_export.stages.image_encoder import image_from_pixel_values
from edgetam_export.stages.registry import STAGES, StageShapes
from edgetam_export.stages.spec import BOX_CORNER_LABELS, EMPTY_SLOT_LABEL, IMAGE_INPUT, NOT_A_POINT_LABEL

def synthetic_image(width: int = 960, height: int = 640, seed: int = 0) -> Image.Image:
    """A deterministic picture with smooth gradients and solid shapes, when no real images are given."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin(x / 40.0) * np.cos(y / 50.0)], axis=-1)
    for _ in range(6):
        cx, cy, r = rng.integers(0, width), rng.integers(0, height), rng.integers(40, 160)
        image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.random(3)
    return Image.fromarray((image * 255).astype(np.uint8))


def load_images(paths: list[Path]) -> list[Image.Image]:
    return [open_picture(path) for path in paths]


def sample_pictures(data_dir: Path | None) -> tuple[list[Image.Image], list[Image.Image]]:
    """(still images, consecutive video frames): the shared test data if present, else synthetic ones."""
    if data_dir is None:
        stills = [synthetic_image(seed=0), synthetic_image(1200, 800, seed=1)]
        return stills, [synthetic_image(seed=10 + i) for i in range(6)]
    stills = load_images([data_dir / "images" / "truck.jpg", data_dir / "images" / "groceries.jpg"])
    frames = load_images(bedroom_frames(data_dir)[:6])
    return stills, frames


def calibration_pictures(data_dir: Path | None) -> tuple[list[Image.Image], list[Image.Image]]:
    """Pictures to calibrate int8 activation ranges on, none of which the parity check uses: cars.jpg and
    a later stretch of the bedroom clip (or other synthetic pictures)."""
    if data_dir is None:
        return [synthetic_image(seed=100), synthetic_image(1200, 800, seed=101)], [synthetic_image(seed=110 + i) for i in range(6)]
    frames = bedroom_frames(data_dir)
    cars = data_dir / "images" / "cars.jpg"
    stills = ([cars] if cars.is_file() else []) + frames[len(frames) // 4: -6: len(frames) // 8]
    return load_images(stills), load_images(frames[-6:])


@dataclass
class StageCase:
    """One parity case: a stage, a label, and its inputs (torch tensors, in contract order)."""

    stage: str
    label: str
    inputs: dict[str, torch.Tensor]


def preprocess(reference: Reference, image: Image.Image) -> torch.Tensor:
    return reference.processor(images=image, return_tensors="pt")["pixel_values"]


def prompt_slots(
    prompts: list[list[tuple[float, float, int]]], shapes: StageShapes
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pack per-object (x, y, label) prompts in model pixels into the decoder's fixed slots."""
    coords = torch.zeros(len(prompts), shapes.point_slots, 2)
    labels = torch.full((len(prompts), shapes.point_slots), EMPTY_SLOT_LABEL, dtype=torch.int32)
    for i, prompt in enumerate(prompts):
        if len(prompt) > shapes.point_slots:
            raise EdgeTamExportError(f"{len(prompt)} prompt points exceed the {shapes.point_slots} slots")
        for j, (x, y, label) in enumerate(prompt):
            coords[i, j] = torch.tensor([x, y])
            labels[i, j] = label
    return coords, labels


def _standard_prompts(size: int) -> list[list[tuple[float, float, int]]]:
    """Clicks, a click pair, a box, and a box with a click, scaled to the model input size."""
    s = size / 1024.0
    nap = (0.0, 0.0, NOT_A_POINT_LABEL)
    tl, br = BOX_CORNER_LABELS
    return [
        [(500 * s, 375 * s, 1), nap],
        [(300 * s, 400 * s, 1), (700 * s, 600 * s, 0), nap],
        [(75 * s, 275 * s, tl), (900 * s, 850 * s, br), nap],
        [(600 * s, 500 * s, 1), (400 * s, 300 * s, tl), (800 * s, 700 * s, br), nap],
    ]


def build_cases(
    reference: Reference,
    shapes: StageShapes,
    data_dir: Path | None,
    pictures: tuple[list[Image.Image], list[Image.Image]] | None = None,
) -> list[StageCase]:
    """Parity cases for every stage from real images and a real video clip (`sample_pictures`, or the
    given (stills, frames), such as `calibration_pictures`)."""
    model = reference.video_model
    stills, frames = pictures or sample_pictures(data_dir)
    cases: list[StageCase] = []

    def run(stage: str, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return STAGES[stage].upstream(model, shapes, inputs)

    def encoder_inputs(image: Image.Image) -> dict[str, torch.Tensor]:
        pixel_values = preprocess(reference, image)
        return {IMAGE_INPUT: image_from_pixel_values(pixel_values)} if shapes.image_input else {"pixel_values": pixel_values}

    encoded = []
    for index, image in enumerate(stills + frames[:1]):
        inputs = encoder_inputs(image)
        cases.append(StageCase("image_encoder", f"image {index}", inputs))
        encoded.append(run("image_encoder", inputs))

    prompts = _standard_prompts(shapes.image_size)[: shapes.max_objects]
    n = len(prompts)
    coords, labels = prompt_slots(prompts, shapes)
    mask_size = shapes.low_res_mask_size

    def decoder_inputs(features: dict, count: int, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        has_mask = torch.zeros(count)
        mask_input = torch.zeros(count, 1, mask_size, mask_size)
        if mask is not None:
            has_mask[-1] = 1.0
            mask_input[-1] = mask
        return {
            "image_embeddings": features["image_embeddings"].expand(count, -1, -1, -1).clone(),
            "high_res_features_0": features["high_res_features_0"],
            "high_res_features_1": features["high_res_features_1"],
            "point_coords": coords[:count],
            "point_labels": labels[:count],
            "mask_input": mask_input,
            "has_mask_input": has_mask,
        }

    first = decoder_inputs(encoded[0], n, None)
    cases.append(StageCase("prompt_decoder", f"{n} objects: clicks, box, box+click", first))
    decoded = run("prompt_decoder", first)
    refine = decoder_inputs(encoded[1], 1, decoded["mask_logits"][0, 1:2])
    cases.append(StageCase("prompt_decoder", "1 object with a mask prompt", refine))

    # Video: encode a few frames, segment object prompts on each, and fill memory banks from them.
    frame_features = [run("image_encoder", encoder_inputs(f)) for f in frames]
    frame_memories, pointers = [], []
    for index, features in enumerate(frame_features):
        decoded = run("prompt_decoder", decoder_inputs(features, n, None))
        best = decoded["iou_scores"][:, 1:].argmax(dim=1) + 1
        selected = decoded["mask_logits"][torch.arange(n), best][:, None]
        hidden = decoded["object_score_logits"][:, :, None, None] <= 0
        selected = torch.where(hidden, torch.full_like(selected, -1024.0), selected)
        inputs = {
            "vision_features": features["vision_features"],
            "mask_logits": selected,
            "object_score_logits": decoded["object_score_logits"],
            "mask_is_binary": torch.tensor([1.0 if (index + i) % 2 == 0 else 0.0 for i in range(n)]),
        }
        if index < 2:
            cases.append(StageCase("memory_encoder", f"frame {index}, {n} objects", inputs))
        if index == 0:
            cases.extend(_mask_prompt_cases(features["vision_features"], selected, shapes))
        frame_memories.append(run("memory_encoder", inputs))
        pointers.append(decoded["object_pointers"][torch.arange(n), best])

    layout = BankLayout.from_shapes(shapes)

    def bank(filled_slots: int, filled_pointers: int) -> dict[str, torch.Tensor]:
        """Each object's bank packed as the tracker packs it: a prompted frame, then recent frames and
        pointers k frames back, normalized as over a long video (16 or more frames)."""
        per_object = []
        for i in range(n):
            memories = [
                Memory(frame_memories[slot % len(frame_memories)]["memory_features"][i].numpy(),
                       frame_memories[slot % len(frame_memories)]["memory_positions"][i].numpy(),
                       layout.temporal_encodings - 1 if slot == 0 else (slot - 1) % (layout.temporal_encodings - 1))
                for slot in range(filled_slots)
            ]
            pointed = [Pointer(pointers[k % len(pointers)][i].numpy(), k) for k in range(filled_pointers)]
            per_object.append(pack_bank(layout, memories, pointed, layout.pointer_slots))
        inputs = {name: torch.from_numpy(np.stack([b[name] for b in per_object])) for name in per_object[0]}
        return {"vision_features": frame_features[-1]["vision_features"]} | inputs

    cases.append(StageCase("memory_attention", f"{n} objects, first frames (2 slots, 2 pointers)", bank(2, 2)))
    cases.append(
        StageCase("memory_attention", f"{n} objects, full bank", bank(layout.memory_slots, layout.pointer_slots))
    )
    return cases


def _mask_prompt_cases(vision_features: torch.Tensor, mask_logits: torch.Tensor, shapes: StageShapes) -> list[StageCase]:
    """Mask prompts as a user draws them: the segmented objects as binary masks, one of them empty."""
    size = shapes.image_size
    masks = (torch.nn.functional.interpolate(mask_logits, size=(size, size), mode="bilinear") > 0).float()
    if len(masks) > 1:
        masks[-1] = 0.0
    count = len(masks)
    return [
        StageCase("mask_prompt_encoder", f"frame 0, {count} objects, last mask empty", {
            "vision_features": vision_features, "masks": masks,
        }),
    ]
