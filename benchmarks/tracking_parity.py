"""Per-frame video parity: the scripted sessions of the test suite on all 200 frames of videos/bedroom,
transformers' EdgeTamVideoModel against a bundle, written to benchmarks/results/tracking_parity_<size>.json.

    python benchmarks/tracking_parity.py --size tiny      # about 2 minutes
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgetam_export.export import export_bundle
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.runtime.tracker import EdgeTamTracker
from edgetam_export.verification.sample_data import bedroom_frames, default_data_dir
from edgetam_export.verification.samples import load_images
from edgetam_export.verification.tracking_parity import SCRIPTS, compare_tracking

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=["tiny", "full"])
    parser.add_argument("--recipe", default="onnx-fp32")
    parser.add_argument("--frames", type=int, default=200)
    args = parser.parse_args()
    reference = random_reference(seed=0, size=args.size)
    data_dir = default_data_dir()
    bundle = HERE.parent / "models" / f"parity-{args.size}-{args.recipe}"
    export_bundle(reference, load_recipe(args.recipe), bundle, data_dir=data_dir, overwrite=True)  # its own scratch
    frames = load_images(bedroom_frames(data_dir)[: args.frames])
    tracker = EdgeTamTracker.from_bundle(bundle)
    document = {"model": reference.describe(), "recipe": args.recipe, "frames": len(frames), "scripts": {}}
    for name, script in SCRIPTS.items():
        parity = compare_tracking(reference, tracker, frames, script)
        document["scripts"][name] = {"steps": [repr(step) for step in script]} | parity.to_json()
        print(f"{name}: {len(parity.frames)} frame results, min IoU {parity.min_iou:.5f}, min logit PSNR "
              f"{parity.min_logit_psnr:.1f} dB, presence agreement {parity.presence_agreement:.3f}, median mask area "
              f"{parity.median_area:.3f}")
    target = HERE / "results" / f"tracking_parity_{args.size}.json"
    target.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
