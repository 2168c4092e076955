"""Per-operator profiles of full-size stages (ExecuTorch's ETDump + Inspector, ONNX Runtime's profiler), as
Markdown tables: what `benchmarks/NOTES.md` quotes when it says where a stage's time goes.

    python benchmarks/profile_stages.py memory_attention:onnx-fp32:fused memory_encoder:executorch-xnnpack-fp32
    python benchmarks/profile_stages.py --size tiny prompt_decoder:onnx-fp32 --out /tmp/profile.md

Each argument is stage:recipe[:attention]; the attention form defaults to the recipe's.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from edgetam_export.benchmarking.profile import profile_stage
from edgetam_export.recipes import load_recipe
from edgetam_export.reference import random_reference
from edgetam_export.stages.registry import stage_shapes
from edgetam_export.verification.sample_data import default_data_dir
from edgetam_export.verification.samples import build_cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", help="stage:recipe[:attention]")
    parser.add_argument("--size", default="full", choices=("full", "tiny"))
    parser.add_argument("--objects", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the tables here (a new file)")
    args = parser.parse_args()
    if args.out is not None and args.out.exists():
        parser.error(f"{args.out} exists; name a new file")
    reference = random_reference(seed=0, size=args.size)
    tables, cases = [], {}
    for item in args.stages:
        stage, recipe_name, *attention = item.split(":")
        recipe = load_recipe(recipe_name)
        if attention:
            recipe = dataclasses.replace(recipe, attention=attention[0])
        shapes = stage_shapes(reference.video_model, recipe.shapes)
        if shapes not in cases:  # the reference's sample inputs: minutes at full size, shared by the recipes
            cases[shapes] = build_cases(reference, shapes, default_data_dir())
        profile = profile_stage(reference, recipe, stage, cases[shapes], objects=args.objects, runs=args.runs,
                                threads=args.threads)
        tables.append(profile.markdown())
        print(tables[-1] + "\n", flush=True)
    if args.out is not None:
        args.out.write_text("\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
