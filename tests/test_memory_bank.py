"""The memory bank alone, without a model: which memories and pointers a frame attends to (transformers'
choices), and how they are packed into the `memory_attention` inputs. Fast: no bundle, no export."""

from __future__ import annotations

import numpy as np
import pytest

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.memory_bank import (
    BankLayout,
    FrameMemory,
    Memory,
    Pointer,
    closest_conditioning_frames,
    pack_bank,
    select_memories,
)
from edgetam_export.stages.spec import TrackingSettings

LAYOUT = BankLayout(memory_slots=9, memory_tokens=2, memory_dim=3, pointer_slots=18, hidden_size=4,
                    temporal_encodings=7)


def frame(marker: float) -> FrameMemory:
    """A frame's memory whose every value is `marker`, so a packed bank shows which frames it holds."""
    return FrameMemory(mask_logits=np.zeros((2, 2), np.float32), object_score=1.0,
                       pointer=np.full(4, marker, np.float32), memory_features=np.full((2, 3), marker, np.float32),
                       memory_positions=np.full((2, 3), -marker, np.float32))


def chosen(conditioning: list[int], tracked: list[int], frame_idx: int, reverse: bool = False, max_cond: int = -1,
           frames: int = 100) -> tuple[list[tuple[float, int]], list[tuple[float, int]], int]:
    """(memory marker, time row) and (pointer marker, distance) in bank order; prompted frames are marked +0.5."""
    memories, pointers, max_pointers = select_memories(
        {t: frame(t + 0.5) for t in conditioning}, {t: frame(t) for t in tracked}, frame_idx, reverse, LAYOUT,
        TrackingSettings(max_cond_frame_num=max_cond), frames)
    return ([(float(m.features[0, 0]), m.time_row) for m in memories],
            [(float(p.vector[0]), p.distance) for p in pointers], max_pointers)


@pytest.mark.parametrize(("frame_idx", "frames", "max_num"), [
    (10, [0, 5, 20, 40], -1), (10, [0, 5, 20, 40], 2), (10, [0, 5, 20, 40], 3), (50, [0, 5, 20, 40], 2),
    (0, [3, 9, 1], 1), (7, [7, 2, 30, 12], 3), (7, [7], 1),
])
def test_conditioning_frames_are_those_transformers_selects(frame_idx, frames, max_num, tiny_reference):
    outputs = {t: object() for t in frames}
    selected, unselected = tiny_reference.video_model._select_closest_cond_frames(frame_idx, outputs, max_num)
    ours, rest = closest_conditioning_frames(frame_idx, frames, max_num)
    assert ours == list(selected) and rest == set(unselected)


def test_a_tracked_frame_attends_to_its_prompt_and_the_six_frames_before_it():
    memories, pointers, max_pointers = chosen(conditioning=[0], tracked=list(range(1, 10)), frame_idx=10)
    # The prompted frame on the last temporal row, then frames 4..9 on rows 5..0 (the closest on row 0).
    assert memories == [(0.5, 6), (4.0, 5), (5.0, 4), (6.0, 3), (7.0, 2), (8.0, 1), (9.0, 0)]
    # The prompted frame's pointer at its distance, then every tracked frame within 15 frames, closest first.
    assert pointers == [(0.5, 10)] + [(float(10 - d), d) for d in range(1, 10)]
    assert max_pointers == 16


def test_reverse_tracking_looks_at_later_frames_and_signs_prompt_distances():
    memories, pointers, _ = chosen(conditioning=[20], tracked=list(range(6, 20)), frame_idx=5, reverse=True)
    assert memories == [(20.5, 6), (11.0, 5), (10.0, 4), (9.0, 3), (8.0, 2), (7.0, 1), (6.0, 0)]
    assert pointers[0] == (20.5, 15) and pointers[1:4] == [(6.0, 1), (7.0, 2), (8.0, 3)]


def test_early_frames_have_few_memories_and_pointers_stop_at_the_video_start():
    memories, pointers, max_pointers = chosen(conditioning=[0], tracked=[1], frame_idx=2, frames=3)
    assert memories == [(0.5, 6), (1.0, 0)]
    assert pointers == [(0.5, 2), (1.0, 1)]
    assert max_pointers == 3  # a 3-frame video normalizes pointer distances by 3, not 16


def test_a_later_prompt_is_not_attended_to_before_it_happens():
    memories, pointers, _ = chosen(conditioning=[0, 30], tracked=list(range(1, 10)), frame_idx=10)
    assert (30.5, 6) in memories  # transformers attends to every prompted frame's memory...
    assert all(marker != 30.5 for marker, _ in pointers)  # ...but only to pointers of frames up to this one


def test_an_unselected_prompt_serves_as_a_recent_memory():
    memories, _, _ = chosen(conditioning=[0, 8, 40], tracked=[9], frame_idx=10, max_cond=2)
    assert [m for m in memories if m[1] == 6] == [(8.5, 6), (40.5, 6)]  # the closest before and after
    assert (0.5, 6) not in memories
    assert (9.0, 0) in memories


def test_packing_fills_slots_in_order_and_switches_the_rest_off():
    memories = [Memory(np.full((2, 3), v, np.float32), np.full((2, 3), -v, np.float32), row)
                for v, row in ((1.0, 6), (2.0, 0))]
    pointers = [Pointer(np.full(4, 5.0, np.float32), 3), Pointer(np.full(4, 6.0, np.float32), 1)]
    bank = pack_bank(LAYOUT, memories, pointers, max_pointers=16)
    assert bank["memory_features"].shape == (9 * 2, 3) and bank["object_pointers"].shape == (18, 4)
    assert bank["memory_features"][:, 0].tolist() == [1, 1, 2, 2] + [0] * 14
    assert bank["memory_positions"][:4, 0].tolist() == [-1, -1, -2, -2]
    assert bank["memory_time_index"].tolist() == [6, 0] + [0] * 7
    assert bank["memory_valid"].tolist() == [1, 1] + [0] * 7
    assert bank["object_pointers"][:3, 0].tolist() == [5, 6, 0] and bank["pointer_valid"].sum() == 2
    assert "pointer_time_offset" not in bank


def test_pointer_time_offsets_are_normalized_distances():
    layout = BankLayout(**{**LAYOUT.__dict__, "pointer_temporal_encoding": True})
    pointers = [Pointer(np.zeros(4, np.float32), d) for d in (10, -4, 1)]
    bank = pack_bank(layout, [], pointers, max_pointers=16)
    assert np.allclose(bank["pointer_time_offset"][:4], [10 / 15, -4 / 15, 1 / 15, 0])


def test_a_bank_that_overflows_names_the_fix():
    memories = [Memory(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float32), 0)] * 10
    with pytest.raises(EdgeTamExportError, match="re-export with larger --memory-slots and --pointer-slots"):
        pack_bank(LAYOUT, memories, [], max_pointers=16)
