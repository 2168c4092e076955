"""`track`: prompts on some frames of a video, tracked to the end, written to a folder.

The output folder is written whole or not at all: masks go to a staging folder as frames are done,
and only a finished run (masks, overlay.mp4 in frame order, summary.json) replaces `out`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.progress import Progress
from edgetam_export.runtime.outputs import load_mask, overlay, save_mask, weights_facts
from edgetam_export.runtime.processing import ObjectPrompt
from edgetam_export.runtime.tracker import EdgeTamTracker, FrameResult
from edgetam_export.runtime.video import VideoFrames
from edgetam_export.safe_output import TRACKING, check_target, staged_output, write_text_atomic

#: Highest overlay frame rate accepted (anything above is a typo).
MAX_FPS = 1000.0


def write_overlay_video(
    out: Path, frames: VideoFrames, frame_indices: list[int], obj_ids: list[int], fps: float, caption: str | None = None
) -> None:
    """overlay.mp4 in frame order (whatever order the frames were tracked in), from the written mask PNGs.

    Each object keeps one colour, named in a legend; frames are decoded one at a time.
    """
    import imageio.v2 as imageio

    names = [f"object {obj}" for obj in obj_ids]
    writer = imageio.get_writer(str(out / "overlay.mp4"), fps=fps, codec="libx264", macro_block_size=2,
                                ffmpeg_log_level="error")
    try:
        for frame_idx in sorted(frame_indices):
            masks = []
            for obj in obj_ids:
                path = out / "masks" / str(obj) / f"{frame_idx:05d}.png"
                masks.append(load_mask(path) if path.is_file() else None)
            array = np.asarray(overlay(frames.frame(frame_idx), masks, names=names, caption=caption))
            writer.append_data(array[: array.shape[0] // 2 * 2, : array.shape[1] // 2 * 2])
    finally:
        writer.close()


def track_video(
    bundle: str | Path,
    video: str | Path,
    out: str | Path,
    prompts: dict[tuple[int, int], ObjectPrompt | Path],
    reverse: bool = False,
    fps: float = 24.0,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Track the prompted objects from their first prompted frame to the end (and back to frame 0
    with `reverse`); write masks, overlay.mp4 and summary.json; return the summary.

    `prompts` maps (frame, object id) to that object's clicks and box in video pixels, or to a mask picture of the
    video's size (nonzero pixels are the object)."""
    if not prompts:
        raise EdgeTamExportError(
            "no prompt given: pass --point FRAME:OBJ:X,Y, --box FRAME:OBJ:X0,Y0,X1,Y1 or --mask FRAME:OBJ:PNG"
        )
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):
        raise EdgeTamExportError(f"--fps must be a frame rate above 0 and at most {MAX_FPS:g}, got {fps:g}")
    out = Path(out)
    check_target(out, TRACKING)
    tracker = EdgeTamTracker.from_bundle(bundle)
    session = tracker.init_session(VideoFrames(video))
    width, height = session.frames.width, session.frames.height
    by_frame: dict[int, dict[int, ObjectPrompt | np.ndarray]] = {}
    for (frame, obj), prompt in sorted(prompts.items(), key=lambda item: item[0]):  # all checked before any tracking
        if not 0 <= frame < session.num_frames:
            raise EdgeTamExportError(
                f"a prompt is on frame {frame}, but the video has frames 0 to {session.num_frames - 1}"
            )
        if isinstance(prompt, ObjectPrompt):
            prompt.validate(width, height, "frame")  # the tracker's own check, before any frame is tracked
        else:
            drawn = load_mask(Path(prompt))
            if drawn.shape == (height, width) and not drawn.any():  # a mask of another size is refused by add_mask
                raise EdgeTamExportError(f"mask '{prompt}' has no nonzero pixel; paint the object (nonzero) or drop --mask")
            prompt = drawn
        by_frame.setdefault(frame, {})[obj] = prompt
    prompted = sorted(by_frame)
    total = session.num_frames - prompted[0] + (prompted[0] if reverse else 0)
    counter = Progress("track: frame", total, progress)
    written: list[int] = []
    started = time.perf_counter()
    with staged_output(out, TRACKING) as staging:

        def emit(result: FrameResult) -> None:
            for obj, mask in zip(result.obj_ids, result.masks()):
                folder = staging / "masks" / str(obj)
                folder.mkdir(parents=True, exist_ok=True)
                save_mask(mask, folder / f"{result.frame_idx:05d}.png")
            written.append(result.frame_idx)
            counter.advance(note=f"frame {result.frame_idx}, {counter.rate:.2f} frames/s")

        for index, frame in enumerate(prompted):
            for obj, prompt in by_frame[frame].items():
                if isinstance(prompt, ObjectPrompt):
                    session.add_object_prompt(frame, obj, prompt)
                else:
                    session.add_mask(frame, obj, prompt)
                result = session.run_frame(frame)
            emit(result)
            stop = prompted[index + 1] - 1 if index + 1 < len(prompted) else session.num_frames - 1
            if stop > frame:
                for result in session.propagate(frame + 1, stop - frame - 1):
                    emit(result)
        if reverse and prompted[0] > 0:
            for result in session.propagate(prompted[0] - 1, prompted[0] - 1, reverse=True):
                emit(result)
        elapsed = time.perf_counter() - started
        facts = weights_facts(tracker.bundle)
        caption = "random weights: not a real tracking" if "warning" in facts else None
        write_overlay_video(staging, session.frames, written, sorted(session.objects), fps, caption)
        summary = {
            "video": str(video),
            "bundle": str(bundle),
            "backend": tracker.bundle.backend,
            "size": {"width": session.frames.width, "height": session.frames.height},
            "objects": sorted(session.objects),
            "frames_tracked": len(written),
            "seconds": round(elapsed, 3),
            "frames_per_second": round(len(written) / elapsed, 3) if elapsed else None,
            "stage_seconds": {k: round(v, 3) for k, v in tracker.stages.seconds.items()},
            "masks": "masks/{object_id}/{frame:05d}.png",
            "overlay": "overlay.mp4 (frame order)",
        } | facts
        write_text_atomic(staging / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
