"""Video tracking on an exported bundle: the memory bank and the per-frame loop of EdgeTamVideoModel.

The semantics follow transformers' video inference session: prompts make a frame a conditioning
frame for an object; every other frame is conditioned on all conditioning frames plus the
`num_maskmem - 1` most recent tracked frames and up to 16 object pointers. All objects that need
work on a frame go through each stage together (one call per stage per frame, chunked by the
bundle's max_objects), and the first memory-attention layer's self-attention is shared by them.
Memory stays bounded: tracked-frame memories farther than `memory_window` frames from both the last
processed frame and the object's prompted frames are dropped (passes that start at a prompted frame,
and corrections within the window, behave exactly as the reference).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from edgetam_export.bundle import Bundle, read_bundle
from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.memory_bank import BankLayout, FrameMemory, pack_bank, select_memories
from edgetam_export.runtime.processing import (
    ObjectPrompt,
    image_encoder_inputs,
    pack_slots,
    resize_antialiased,
    resize_logits,
    select_for_tracking,
)
from edgetam_export.runtime.runners import load_runners
from edgetam_export.runtime.runners.base import BundleRuntime
from edgetam_export.runtime.video import VideoFrames
from edgetam_export.stages.spec import MASK_LOGIT_BIAS, MASK_LOGIT_SCALE

#: transformers' placeholder logit for the masks of an object predicted absent.
NO_OBJECT_SCORE = -1024.0
#: The stages a tracker runs; `mask_prompt_encoder` is needed only for mask prompts.
TRACKING_STAGES = ("image_encoder", "prompt_decoder", "memory_encoder", "memory_attention")
MASK_PROMPT_STAGE = "mask_prompt_encoder"


@dataclass(frozen=True)
class MaskPrompt:
    """A mask given for an object on a frame, at the model input size (S, S): 1.0 inside, 0.0 outside."""

    mask: np.ndarray


@dataclass
class TrackedObject:
    obj_id: int
    prompts: dict[int, ObjectPrompt | MaskPrompt] = field(default_factory=dict)  # frame -> prompt
    conditioning: dict[int, FrameMemory] = field(default_factory=dict)
    tracked: dict[int, FrameMemory] = field(default_factory=dict)
    tracked_direction: dict[int, bool] = field(default_factory=dict)  # frame -> reverse


@dataclass
class FrameResult:
    """Masks of every object on one frame."""

    frame_idx: int
    obj_ids: list[int]
    mask_logits: np.ndarray  # (objects, m, m) low-resolution logits
    object_score_logits: np.ndarray  # (objects,)
    height: int
    width: int

    def masks(self) -> np.ndarray:
        """(objects, height, width) boolean masks at the video's resolution."""
        return resize_logits(self.mask_logits, self.height, self.width) > 0.0


@dataclass
class _Work:
    obj: TrackedObject
    initial: bool
    reverse: bool
    prompt: ObjectPrompt | MaskPrompt | None


class TrackingSession:
    """One video and its objects: add prompts, run frames, propagate."""

    def __init__(self, tracker: EdgeTamTracker, frames: VideoFrames, memory_window: int | None) -> None:
        self.tracker = tracker
        self.frames = frames
        self.memory_window = memory_window
        self.objects: dict[int, TrackedObject] = {}
        self.objects_with_new_prompts: list[int] = []
        self._features: tuple[int, dict[str, np.ndarray]] | None = None

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    def add_prompt(
        self,
        frame_idx: int,
        obj_id: int,
        points: list[tuple[float, float]] | None = None,
        labels: list[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
    ) -> None:
        """Clicks (label 1 positive, 0 negative) and/or a box for one object on one frame, in video pixels.

        As in transformers, new prompts replace the object's earlier prompts on that frame, and
        only the objects prompted by the latest call count as newly prompted.
        """
        try:
            prompt = ObjectPrompt.of(points, labels, box)
        except EdgeTamExportError as exc:
            raise EdgeTamExportError(f"object {obj_id}: {exc}") from None
        self.add_object_prompt(frame_idx, obj_id, prompt)

    def add_object_prompt(self, frame_idx: int, obj_id: int, prompt: ObjectPrompt) -> None:
        """`add_prompt` with the prompt already an `ObjectPrompt` (video pixels)."""
        self._check_prompt_target(frame_idx, obj_id)
        if not len(prompt.points) and prompt.box is None:
            raise EdgeTamExportError(f"object {obj_id}: give points or a box")
        prompt.validate(self.frames.width, self.frames.height, "frame")
        self.objects.setdefault(obj_id, TrackedObject(obj_id)).prompts[frame_idx] = prompt
        self.objects_with_new_prompts = [obj_id]

    def add_mask(self, frame_idx: int, obj_id: int, mask: np.ndarray) -> None:
        """A mask (height x width of the video, nonzero inside) for one object on one frame.

        As in transformers, the mask itself is the frame's output and memory (the decoder only
        supplies the object pointer), and it replaces the object's earlier prompts on that frame.
        """
        self._check_prompt_target(frame_idx, obj_id)
        if MASK_PROMPT_STAGE not in self.tracker.runners:
            raise EdgeTamExportError(
                f"bundle '{self.tracker.bundle.path}' has no {MASK_PROMPT_STAGE} stage (exported before mask "
                "prompts were supported); re-export it to use mask prompts"
            )
        mask = np.asarray(mask)
        width, height, size = self.frames.width, self.frames.height, self.tracker.image_size
        if mask.shape != (height, width):
            raise EdgeTamExportError(
                f"object {obj_id}: the mask is {'x'.join(map(str, mask.shape[::-1]))} but the video is {width}x{height}"
            )
        binary = (mask != 0).astype(np.float32)
        if binary.shape != (size, size):  # Sam2VideoProcessor: antialiased resize, then threshold at 0.5
            binary = (resize_antialiased(binary, size, size) >= 0.5).astype(np.float32)
        self.objects.setdefault(obj_id, TrackedObject(obj_id)).prompts[frame_idx] = MaskPrompt(binary)
        self.objects_with_new_prompts = [obj_id]

    def _check_prompt_target(self, frame_idx: int, obj_id: int) -> None:
        if not 0 <= frame_idx < self.num_frames:
            raise EdgeTamExportError(f"frame {frame_idx} does not exist: the video has frames 0 to {self.num_frames - 1}")
        if obj_id not in self.objects and len(self.objects) >= self.tracker.max_tracked_objects:
            raise EdgeTamExportError(
                f"object {obj_id} would be object {len(self.objects) + 1}; this tracker holds at most "
                f"{self.tracker.max_tracked_objects} (raise max_tracked_objects)"
            )

    def run_frame(self, frame_idx: int, reverse: bool = False) -> FrameResult:
        """Segment every object on one frame (the prompted frame after add_prompt, or the next tracked one)."""
        if not self.objects:
            raise EdgeTamExportError("no objects to track: add a prompt first")
        if not 0 <= frame_idx < self.num_frames:
            raise EdgeTamExportError(f"frame {frame_idx} does not exist: the video has frames 0 to {self.num_frames - 1}")
        results: dict[int, FrameMemory] = {}
        work: list[_Work] = []
        for obj in self.objects.values():
            is_new = obj.obj_id in self.objects_with_new_prompts
            if not is_new and frame_idx in obj.conditioning:
                results[obj.obj_id] = obj.conditioning[frame_idx]
                continue
            initial, prompt = False, None
            if is_new:
                initial = frame_idx not in obj.tracked_direction
                if initial:
                    reverse = False  # as transformers does: from here on, for every later object too
                prompt = obj.prompts.get(frame_idx)
                if prompt is not None:
                    self.objects_with_new_prompts.remove(obj.obj_id)
            if not initial and not obj.conditioning:
                raise EdgeTamExportError(
                    f"object {obj.obj_id} has no prompted frame yet: call run_frame on the prompted frame after "
                    "each add_prompt (only the latest add_prompt counts as new, as in transformers)"
                )
            work.append(_Work(obj, initial, reverse, prompt))
        if work:
            for item, memory in zip(work, self._compute(frame_idx, work)):
                results[item.obj.obj_id] = memory
                if item.initial:
                    item.obj.conditioning[frame_idx] = memory
                else:
                    item.obj.tracked[frame_idx] = memory
                    item.obj.tracked_direction[frame_idx] = item.reverse
            self._forget(frame_idx)
        ids = list(self.objects)
        return FrameResult(
            frame_idx=frame_idx,
            obj_ids=ids,
            mask_logits=np.stack([results[i].mask_logits for i in ids]),
            object_score_logits=np.array([results[i].object_score for i in ids], np.float32),
            height=self.frames.height,
            width=self.frames.width,
        )

    def propagate(
        self, start_frame: int | None = None, max_frames: int | None = None, reverse: bool = False
    ) -> Iterator[FrameResult]:
        """Track every object frame after frame, as `propagate_in_video_iterator` does."""
        if start_frame is None:
            prompted = [f for obj in self.objects.values() for f in obj.conditioning]
            if not prompted:
                raise EdgeTamExportError("nothing to propagate: add a prompt and run_frame on it first")
            start_frame = min(prompted)
        max_frames = self.num_frames if max_frames is None else max_frames
        if reverse:
            end = max(start_frame - max_frames, 0)
            order = range(start_frame, end - 1, -1) if start_frame > 0 else range(0)
        else:
            end = min(start_frame + max_frames, self.num_frames - 1)
            order = range(start_frame, end + 1)
        for frame_idx in order:
            yield self.run_frame(frame_idx, reverse=reverse)

    # -- the per-frame computation --------------------------------------------------------------

    def _frame_features(self, frame_idx: int) -> dict[str, np.ndarray]:
        if self._features is None or self._features[0] != frame_idx:
            inputs = image_encoder_inputs(self.frames.frame(frame_idx), self.tracker.runners["image_encoder"].spec)
            self._features = (frame_idx, self.tracker.stages.run("image_encoder", inputs))
        return self._features[1]

    def _compute(self, frame_idx: int, work: list[_Work]) -> list[FrameMemory]:
        tracker = self.tracker
        features = self._frame_features(frame_idx)
        count, mask_size = len(work), tracker.image_size // 4
        masked = [i for i, item in enumerate(work) if isinstance(item.prompt, MaskPrompt)]
        unmasked = [i for i in range(count) if i not in masked]
        embeddings = np.repeat(features["image_embeddings"], count, axis=0)
        tracked = [i for i in unmasked if not work[i].initial]
        if tracked:
            banks = [self._bank(work[i].obj, frame_idx, work[i].reverse) for i in tracked]
            inputs = {name: np.stack([bank[name] for bank in banks]) for name in banks[0]}
            inputs["vision_features"] = features["vision_features"]
            conditioned = tracker.stages.run_batched("memory_attention", inputs)["conditioned_features"]
            embeddings[tracked] = conditioned
        mask_input = np.zeros((count, 1, mask_size, mask_size), np.float32)
        has_mask_input = np.zeros(count, np.float32)
        if masked:
            # transformers' `_use_mask_as_output`: the decoder sees the raw frame features and the mask
            # through `mask_downsample`, only to produce the object pointer.
            drawn = np.stack([work[i].prompt.mask[None] for i in masked])
            prompted = tracker.stages.run_batched(
                MASK_PROMPT_STAGE, {"vision_features": features["vision_features"], "masks": drawn}
            )
            embeddings[masked] = features["vision_features"]
            mask_input[masked] = prompted["decoder_mask_input"]
            has_mask_input[masked] = 1.0
        points = [None if isinstance(item.prompt, MaskPrompt) else item.prompt for item in work]
        coords, labels, multimask = tracker.video_prompt_slots(points, [item.initial for item in work],
                                                               self.frames.width, self.frames.height)
        multimask[masked] = True  # `_use_mask_as_output` decodes the pointer with multimask, whatever the config
        decoded = tracker.stages.run_batched("prompt_decoder", {
            "image_embeddings": embeddings,
            "high_res_features_0": features["high_res_features_0"],
            "high_res_features_1": features["high_res_features_1"],
            "point_coords": coords,
            "point_labels": labels,
            "mask_input": mask_input,
            "has_mask_input": has_mask_input,
        })
        masks, pointers = select_for_tracking(decoded, multimask)
        scores = decoded["object_score_logits"][:, 0].copy()
        masks = np.where(scores[:, None, None] > 0, masks, np.float32(NO_OBJECT_SCORE))
        memory_features = np.zeros((count, tracker.layout.memory_tokens, tracker.layout.memory_dim), np.float32)
        memory_positions = np.zeros_like(memory_features)
        if unmasked:
            encoded = tracker.stages.run_batched("memory_encoder", {
                "vision_features": features["vision_features"],
                "mask_logits": masks[unmasked][:, None],
                "object_score_logits": decoded["object_score_logits"][unmasked],
                "mask_is_binary": np.array([work[i].prompt is not None for i in unmasked], np.float32),
            })
            memory_features[unmasked] = encoded["memory_features"]
            memory_positions[unmasked] = encoded["memory_positions"]
        if masked:
            masks[masked] = resize_antialiased(drawn[:, 0] * MASK_LOGIT_SCALE + MASK_LOGIT_BIAS, mask_size, mask_size)
            scores[masked] = prompted["object_score_logits"][:, 0]
            present = scores[masked, None] > 0
            pointers[masked] = np.where(present, pointers[masked], prompted["no_object_pointer"])
            memory_features[masked] = prompted["memory_features"]
            memory_positions[masked] = prompted["memory_positions"]
        return [
            FrameMemory(masks[i], float(scores[i]), pointers[i], memory_features[i], memory_positions[i])
            for i in range(count)
        ]

    def _bank(self, obj: TrackedObject, frame_idx: int, reverse: bool) -> dict[str, np.ndarray]:
        """The memory_attention inputs of one object, as the reference gathers its memory."""
        tracker = self.tracker
        memories, pointers, max_pointers = select_memories(
            obj.conditioning, obj.tracked, frame_idx, reverse, tracker.layout, tracker.settings, self.num_frames,
        )
        try:
            return pack_bank(tracker.layout, memories, pointers, max_pointers)
        except EdgeTamExportError as exc:
            raise EdgeTamExportError(f"object {obj.obj_id} on frame {frame_idx}: {exc}") from None

    def _forget(self, frame_idx: int) -> None:
        """Drop tracked-frame memories farther than the window from the last processed frame and from
        every prompted frame of the object, so that a pass starting at a prompt (forward after reverse,
        reverse after forward) finds the memories the reference would use, in bounded memory."""
        if self.memory_window is None:
            return
        for obj in self.objects.values():
            anchors = [frame_idx, *obj.conditioning]
            for old in [t for t in obj.tracked if all(abs(t - a) > self.memory_window for a in anchors)]:
                del obj.tracked[old]


class EdgeTamTracker(BundleRuntime):
    """Runs a bundle's stages over video frames."""

    def __init__(self, bundle: Bundle, runners: dict, max_tracked_objects: int = 64) -> None:
        super().__init__(bundle, runners)
        #: The memory_attention capacities (slots, tokens, pointers, temporal encodings).
        self.layout = BankLayout.from_shapes(bundle.manifest.shapes)
        #: The model's host-side decisions (multimask, conditioning frames), from the manifest.
        self.settings = bundle.manifest.tracking
        self.max_tracked_objects = max_tracked_objects

    @classmethod
    def from_bundle(cls, path: str | Path, max_tracked_objects: int = 64) -> EdgeTamTracker:
        bundle = read_bundle(path)
        optional = [MASK_PROMPT_STAGE] if MASK_PROMPT_STAGE in bundle.stage_names else []
        return cls(bundle, load_runners(bundle, [*TRACKING_STAGES, *optional]), max_tracked_objects)

    def init_session(
        self, video: str | Path | list[Image.Image] | VideoFrames, memory_window: int | None = 32
    ) -> TrackingSession:
        """A session over a folder of frames, a video file or a list of images."""
        frames = video if isinstance(video, VideoFrames) else VideoFrames(video)
        shortest = max(self.layout.temporal_encodings, self.settings.max_object_pointers)
        if memory_window is not None and memory_window < shortest:
            raise EdgeTamExportError(
                f"memory_window must be at least {shortest} frames"
            )
        return TrackingSession(self, frames, memory_window)

    def video_prompt_slots(
        self, prompts: list[ObjectPrompt | None], initial: list[bool], width: int, height: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decoder slots for video prompts (video pixels) as the video model packs them (box corners first; a frame
        without prompt gets two not-a-point tokens), and whether each object asks for multimask output
        (`_use_multimask`, from the bundle's tracking settings)."""
        empty = ObjectPrompt.of()
        coords, labels = pack_slots([p or empty for p in prompts], self.point_slots, self.image_size / width,
                                    self.image_size / height, box_first=True)
        multimask = np.array([self.settings.multimask(first, 0 if p is None else p.point_count)
                              for p, first in zip(prompts, initial)], bool)
        return coords, labels, multimask
