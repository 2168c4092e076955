"""Long-video memory: track one object through 2,000 frames and record resident memory every 100 frames.

The clip is made here from videos/bedroom (forward, then reversed, repeated) and written as an .mp4,
so the run also shows that frames are streamed from the file, never all loaded. Memory must stay flat
(within 5%) once the memory window is full.

    python benchmarks/long_video.py                      # tiny model, ONNX, 2,000 frames (~5 minutes)
    python benchmarks/long_video.py --frames 300 --name smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from edgetam_export.benchmarking.bench import code_commit
from edgetam_export.export import export_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.runtime.tracker import EdgeTamTracker
from edgetam_export.runtime.video import VideoFrames
from edgetam_export.verification.sample_data import default_data_dir

HERE = Path(__file__).resolve().parent
#: Flat means: after warm-up, no sample above the first post-warm-up sample by more than this.
FLAT_TOLERANCE = 0.05


def resident_mb() -> float:
    """Current resident set size (not the peak) from /proc, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark reads Linux's /proc)")


def write_clip(source: Path, frames: int, path: Path) -> None:
    """`frames` frames of the source clip played forward then backward, over and over, as an .mp4."""
    paths = sorted(source.glob("*.jpg"))
    cycle = paths + paths[-2:0:-1]
    with imageio.get_writer(str(path), fps=24, codec="libx264", quality=8, macro_block_size=2,
                            ffmpeg_log_level="error") as writer:
        for index in range(frames):
            writer.append_data(np.asarray(Image.open(cycle[index % len(cycle)]).convert("RGB")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--recipe", default="onnx-fp32")
    parser.add_argument("--name", default="long_video_tiny")
    args = parser.parse_args()

    data_dir = default_data_dir()
    if data_dir is None:
        raise SystemExit("no sample data: run from the repository root with ../shared/data beside it")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        clip = scratch / "long.mp4"
        write_clip(data_dir / "videos" / "bedroom", args.frames, clip)
        bundle = export_bundle(random_reference(0, "tiny"), load_recipe(args.recipe), scratch / "bundle",
                               data_dir=data_dir)
        tracker = EdgeTamTracker.from_bundle(bundle.path)
        session = tracker.init_session(VideoFrames(clip))
        session.add_prompt(0, 1, points=[(210, 350)])
        session.run_frame(0)
        samples, started = [], time.perf_counter()
        for result in session.propagate(1):
            done = result.frame_idx + 1
            if done % args.every == 0 or done == args.frames:
                samples.append({"frames": done, "rss_mb": round(resident_mb(), 1),
                                "memories_held": sum(len(o.tracked) for o in session.objects.values()),
                                "seconds": round(time.perf_counter() - started, 1)})
                print(samples[-1], flush=True)
    window = session.memory_window
    steady = [s for s in samples if s["frames"] > 2 * window + args.every]
    base = steady[0]["rss_mb"]
    growth = max(s["rss_mb"] for s in steady) / base - 1
    result = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": code_commit(),
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "recipe": args.recipe,
        "model": "random tiny (seed 0)",
        "video": f"{args.frames} frames of videos/bedroom forward and reversed, one .mp4 read frame by frame",
        "memory_window": window,
        "samples": samples,
        "steady_state": {"from_frame": steady[0]["frames"], "rss_mb_at_start": base,
                         "max_growth_fraction": round(growth, 4), "limit_fraction": FLAT_TOLERANCE,
                         "flat": growth <= FLAT_TOLERANCE},
    }
    target = HERE / "results" / f"{args.name}.json"
    target.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {target}: resident memory grew {100 * growth:.1f}% from frame {steady[0]['frames']} "
          f"to {args.frames} (limit {100 * FLAT_TOLERANCE:.0f}%)")


if __name__ == "__main__":
    main()
