"""The memory bank of video tracking: which memories and pointers a frame attends to, and how they are
packed into the fixed-capacity inputs of the `memory_attention` stage.

Selection follows transformers' `EdgeTamVideoModel` (`_gather_memory_frame_outputs`,
`_select_closest_cond_frames`, `_get_object_pointers`); packing follows the stage contract. The
tracker and the parity cases of `samples.py` both pack through `pack_bank`, so parity exercises the
code users run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageShapes, TrackingSettings


@dataclass
class FrameMemory:
    """What one processed frame leaves for later frames of one object."""

    mask_logits: np.ndarray  # (m, m) low-resolution, -1024 everywhere if the object is absent
    object_score: float
    pointer: np.ndarray  # (256,)
    memory_features: np.ndarray  # (T, 64)
    memory_positions: np.ndarray  # (T, 64)


@dataclass(frozen=True)
class BankLayout:
    """The capacities of a bundle's `memory_attention` stage (from the manifest's `shapes`)."""

    memory_slots: int
    memory_tokens: int
    memory_dim: int
    pointer_slots: int
    hidden_size: int
    temporal_encodings: int
    pointer_temporal_encoding: bool = False

    @classmethod
    def from_shapes(cls, shapes: StageShapes) -> BankLayout:
        return cls(
            memory_slots=shapes.memory_slots,
            memory_tokens=shapes.memory_tokens,
            memory_dim=shapes.memory_dim,
            pointer_slots=shapes.pointer_slots,
            hidden_size=shapes.hidden_size,
            temporal_encodings=shapes.temporal_encodings,
            pointer_temporal_encoding=shapes.pointer_temporal_encoding,
        )


@dataclass(frozen=True)
class Memory:
    """One spatial memory in the bank: perceiver tokens and the row of the temporal encoding they get."""

    features: np.ndarray  # (T, d)
    positions: np.ndarray  # (T, d)
    time_row: int


@dataclass(frozen=True)
class Pointer:
    """One object pointer and its frame distance (signed by the tracking direction for prompted frames)."""

    vector: np.ndarray  # (C,)
    distance: int


def closest_conditioning_frames(frame_idx: int, frames: list[int], max_num: int) -> tuple[list[int], set[int]]:
    """(selected, unselected) conditioning frames, as transformers' `_select_closest_cond_frames`:
    all of them when `max_num` is -1 or not exceeded; else the closest before, the closest at or after,
    then the temporally closest others. Unselected ones may still serve as recent-frame memories."""
    if max_num == -1 or len(frames) <= max_num:
        return list(frames), set()
    selected = []
    before = max((t for t in frames if t < frame_idx), default=None)
    if before is not None:
        selected.append(before)
    after = min((t for t in frames if t >= frame_idx), default=None)
    if after is not None:
        selected.append(after)
    rest = sorted((t for t in frames if t not in selected), key=lambda t: abs(t - frame_idx))
    selected += rest[: max_num - len(selected)]
    return selected, {t for t in frames if t not in selected}


def select_memories(
    conditioning: dict[int, FrameMemory],
    tracked: dict[int, FrameMemory],
    frame_idx: int,
    reverse: bool,
    layout: BankLayout,
    settings: TrackingSettings,
    num_frames: int,
) -> tuple[list[Memory], list[Pointer], int]:
    """The memories and pointers transformers' video model gathers for one object on `frame_idx`, and the
    number of pointers it normalizes their distances by (min(video frames, max_object_pointers))."""
    num_maskmem = layout.temporal_encodings
    selected, unselected = closest_conditioning_frames(frame_idx, list(conditioning), settings.max_cond_frame_num)
    memories = [_memory(conditioning[t], num_maskmem - 1) for t in selected]
    for offset in range(num_maskmem - 1, 0, -1):
        previous = frame_idx + offset if reverse else frame_idx - offset
        memory = tracked.get(previous, conditioning.get(previous) if previous in unselected else None)
        if memory is not None:
            memories.append(_memory(memory, offset - 1))
    sign = -1 if reverse else 1
    pointers = [Pointer(m.pointer, (frame_idx - t) * sign) for t, m in conditioning.items()
                if (t >= frame_idx if reverse else t <= frame_idx)]
    max_pointers = min(num_frames, settings.max_object_pointers)
    for distance in range(1, max_pointers):
        reference = frame_idx + distance if reverse else frame_idx - distance
        if reference < 0 or reference >= num_frames:
            break
        if reference in tracked:
            pointers.append(Pointer(tracked[reference].pointer, distance))
    return memories, pointers, max_pointers


def _memory(frame: FrameMemory, time_row: int) -> Memory:
    return Memory(frame.memory_features, frame.memory_positions, time_row)


def pack_bank(layout: BankLayout, memories: list[Memory], pointers: list[Pointer], max_pointers: int) -> dict:
    """The `memory_attention` inputs of one object (no objects axis): filled slots first, the rest off."""
    if len(memories) > layout.memory_slots or len(pointers) > layout.pointer_slots:
        raise EdgeTamExportError(
            f"{len(memories)} memories and {len(pointers)} pointers do not fit the bundle's {layout.memory_slots} "
            f"and {layout.pointer_slots} slots (each prompted frame of an object takes one of each): prompt fewer "
            "frames, or re-export with larger --memory-slots and --pointer-slots"
        )
    tokens, dim = layout.memory_tokens, layout.memory_dim
    features = np.zeros((layout.memory_slots * tokens, dim), np.float32)
    positions = np.zeros_like(features)
    time_index = np.zeros(layout.memory_slots, np.int32)
    valid = np.zeros(layout.memory_slots, np.float32)
    for slot, memory in enumerate(memories):
        features[slot * tokens : (slot + 1) * tokens] = memory.features
        positions[slot * tokens : (slot + 1) * tokens] = memory.positions
        time_index[slot], valid[slot] = memory.time_row, 1.0
    object_pointers = np.zeros((layout.pointer_slots, layout.hidden_size), np.float32)
    pointer_valid = np.zeros(layout.pointer_slots, np.float32)
    if pointers:
        object_pointers[: len(pointers)] = np.stack([p.vector for p in pointers])
        pointer_valid[: len(pointers)] = 1.0
    bank = {
        "memory_features": features,
        "memory_positions": positions,
        "memory_time_index": time_index,
        "memory_valid": valid,
        "object_pointers": object_pointers,
        "pointer_valid": pointer_valid,
    }
    if layout.pointer_temporal_encoding:
        offsets = np.zeros(layout.pointer_slots, np.float32)
        offsets[: len(pointers)] = [p.distance for p in pointers]
        bank["pointer_time_offset"] = offsets / np.float32(max(max_pointers - 1, 1))
    return bank
