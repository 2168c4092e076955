"""`track`: prompts on some frames of a video, tracked to the end, written frame by frame to a folder.

Masks are written as soon as a frame is done, so an error on a later frame (an unreadable frame,
one of another size) leaves every earlier frame's masks intact.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.runtime.outputs import load_mask, overlay, prepare_folder, save_mask
from edgetam_export.runtime.tracker import EdgeTamTracker, FrameResult
from edgetam_export.runtime.video import VideoFrames


@dataclass(frozen=True)
class VideoPrompt:
    """A click (label 1 / 0), a box (video pixels) or a mask picture for one object on one frame."""

    frame: int
    obj_id: int
    point: tuple[float, float] | None = None
    label: int = 1
    box: tuple[float, float, float, float] | None = None
    mask: Path | None = None


class _Writer:
    """Per-frame mask PNGs and the overlay video."""

    def __init__(self, out: Path, frames: VideoFrames, fps: float) -> None:
        import imageio.v2 as imageio

        prepare_folder(out)
        self.out, self.frames = out, frames
        self.video = imageio.get_writer(str(out / "overlay.mp4"), fps=fps, codec="libx264", macro_block_size=2,
                                        ffmpeg_log_level="error")
        self.written = 0

    def write(self, result: FrameResult) -> None:
        masks = result.masks()
        for obj, mask in zip(result.obj_ids, masks):
            folder = self.out / "masks" / str(obj)
            folder.mkdir(exist_ok=True)
            save_mask(mask, folder / f"{result.frame_idx:05d}.png")
        picture = overlay(self.frames.frame(result.frame_idx), list(masks))
        array = np.asarray(picture)
        self.video.append_data(array[: array.shape[0] // 2 * 2, : array.shape[1] // 2 * 2])
        self.written += 1

    def close(self) -> None:
        self.video.close()


def track_video(
    bundle: str | Path,
    video: str | Path,
    out: str | Path,
    prompts: list[VideoPrompt],
    reverse: bool = False,
    fps: float = 24.0,
    progress: Callable[[int, float], None] | None = None,
) -> dict:
    """Track the prompted objects from their first prompted frame to the end (and back to frame 0
    with `reverse`); write masks, overlay.mp4 and summary.json; return the summary."""
    if not prompts:
        raise EdgeTamExportError(
            "no prompt given: pass --point FRAME:OBJ:X,Y, --box FRAME:OBJ:X0,Y0,X1,Y1 or --mask FRAME:OBJ:PNG"
        )
    out = Path(out)
    tracker = EdgeTamTracker.from_bundle(bundle)
    session = tracker.init_session(VideoFrames(video))
    for prompt in prompts:
        if not 0 <= prompt.frame < session.num_frames:
            raise EdgeTamExportError(
                f"a prompt is on frame {prompt.frame}, but the video has frames 0 to {session.num_frames - 1}"
            )
    by_frame: dict[int, dict[int, list[VideoPrompt]]] = {}
    for prompt in prompts:
        by_frame.setdefault(prompt.frame, {}).setdefault(prompt.obj_id, []).append(prompt)
    prompted = sorted(by_frame)
    writer = _Writer(out, session.frames, fps)
    started = time.perf_counter()

    def emit(result: FrameResult) -> None:
        writer.write(result)
        if progress:
            progress(result.frame_idx, writer.written / max(time.perf_counter() - started, 1e-9))

    try:
        for index, frame in enumerate(prompted):
            for obj, items in by_frame[frame].items():
                boxes = [p.box for p in items if p.box is not None]
                masks = [p.mask for p in items if p.mask is not None]
                if len(boxes) > 1 or len(masks) > 1:
                    raise EdgeTamExportError(f"object {obj} has several boxes or masks on frame {frame}; give one")
                clicks = [p for p in items if p.point is not None]
                if masks and (clicks or boxes):
                    raise EdgeTamExportError(
                        f"object {obj} has a mask and clicks or a box on frame {frame}; a mask prompt stands alone"
                    )
                if masks:
                    session.add_mask(frame, obj, load_mask(masks[0]))
                else:
                    session.add_prompt(
                        frame, obj, [p.point for p in clicks] or None, [p.label for p in clicks] or None,
                        boxes[0] if boxes else None,
                    )
                result = session.run_frame(frame)
            emit(result)
            stop = prompted[index + 1] - 1 if index + 1 < len(prompted) else session.num_frames - 1
            if stop > frame:
                for result in session.propagate(frame + 1, stop - frame - 1):
                    emit(result)
        if reverse and prompted[0] > 0:
            for result in session.propagate(prompted[0] - 1, prompted[0] - 1, reverse=True):
                emit(result)
    finally:
        writer.close()
    elapsed = time.perf_counter() - started
    summary = {
        "video": str(video),
        "bundle": str(bundle),
        "backend": tracker.bundle.backend,
        "size": {"width": session.frames.width, "height": session.frames.height},
        "objects": sorted(session.objects),
        "frames_tracked": writer.written,
        "seconds": round(elapsed, 3),
        "frames_per_second": round(writer.written / elapsed, 3) if elapsed else None,
        "stage_seconds": {k: round(v, 3) for k, v in tracker.stage_seconds.items()},
        "masks": "masks/{object_id}/{frame:05d}.png",
        "overlay": "overlay.mp4",
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
