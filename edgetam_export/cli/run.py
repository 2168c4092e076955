"""Commands that run a bundle: segment (clicks, boxes, --auto) and track (a video)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.cli.app import app, examples, say
from edgetam_export.errors import EdgeTamExportError


def parse_prompts(texts: list[str], option: str, framed: bool) -> list[tuple[int | None, int | None, list[float], int]]:
    """`--point [FRAME:][OBJ:]X,Y[,LABEL]` or `--box [FRAME:][OBJ:]X0,Y0,X1,Y1` texts (FRAME and OBJ required when
    `framed`, for `track`) as (frame, object, numbers, label), naming the option and the text on a mistake."""
    counts, usage = ((2, 3), "X,Y[,LABEL]") if option == "--point" else ((4,), "X0,Y0,X1,Y1")
    usage = ("FRAME:OBJ:" if framed else "[OBJ:]") + usage
    parsed = []
    for text in texts:
        frame_text, obj_text, values = (["", ""] + text.split(":"))[-3:] if text.count(":") <= 2 else ("x", "", "")
        try:
            numbers = [float(v) for v in values.split(",")]
            frame = int(frame_text) if frame_text else None
            obj = int(obj_text) if obj_text else None
        except ValueError:
            numbers, frame, obj = [], None, None
        if len(numbers) not in counts or (framed and (frame is None or obj is None)) or (not framed and frame_text) \
                or min(frame or 0, obj or 0) < 0:
            raise EdgeTamExportError(f"{option} '{text}' is not {usage}")
        if not all(math.isfinite(v) for v in numbers):
            raise EdgeTamExportError(f"{option} '{text}' has a value that is not a finite number")
        if len(numbers) == 3 and numbers[2] not in (0.0, 1.0):
            raise EdgeTamExportError(
                f"{option} '{text}': the label must be 1 (positive) or 0 (negative), got {numbers[2]:g}")
        parsed.append((frame, obj, numbers, int(numbers[2]) if len(numbers) == 3 else 1))
    return parsed


@app.command(epilog=examples(
    "edgetam-export segment data/images/truck.jpg --bundle models/edgetam-xnnpack --point 500,375 --out out/truck   "
    "(data/: edgetam-export sample-data)",
    "edgetam-export segment IMAGE --bundle DIR --point 500,375 --point 450,300,0 --out out/refined   (0: negative)",
    "edgetam-export segment IMAGE --bundle DIR --box 75,275,1725,850 --box 425,600,700,875 --out out/boxes",
    "edgetam-export segment IMAGE --bundle DIR --auto --out out/everything",
))
def segment(
    image: Annotated[Path, typer.Argument(help="Image file.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (masks/, overlay.png, result.json).")],
    point: Annotated[
        Optional[list[str]],
        typer.Option("--point", help="[OBJ:]X,Y[,LABEL] in image pixels; LABEL 1 (default) or 0; OBJ defaults to 0."),
    ] = None,
    box: Annotated[
        Optional[list[str]],
        typer.Option("--box", help="[OBJ:]X0,Y0,X1,Y1 in image pixels; the n-th box without OBJ is object n."),
    ] = None,
    single_mask: Annotated[
        Optional[bool],
        typer.Option("--single-mask/--multimask", help="Default: 3 masks for one object, 1 per object for several."),
    ] = None,
    auto: Annotated[bool, typer.Option("--auto", help="Segment everything (automatic mask generation).")] = False,
    points_per_side: Annotated[int, typer.Option("--points-per-side", help="--auto: grid size.")] = 32,
    points_per_batch: Annotated[int, typer.Option("--points-per-batch", help="--auto: prompts per batch.")] = 64,
    pred_iou_thresh: Annotated[float, typer.Option("--pred-iou-thresh", help="--auto: minimum predicted IoU.")] = 0.88,
    stability_thresh: Annotated[float, typer.Option("--stability-thresh", help="--auto: minimum stability.")] = 0.95,
    crop_layers: Annotated[int, typer.Option("--crop-layers", help="--auto: layers of image crops.")] = 0,
) -> None:
    """Segment one image with clicks and boxes, or everything with --auto; write masks and an overlay."""
    from edgetam_export.runtime.automatic import MaskGenerationSettings
    from edgetam_export.runtime.processing import group_prompts
    from edgetam_export.runtime.segment import segment_image

    prompts = group_prompts(  # a click without OBJ is object 0's, the n-th box without OBJ is object n
        [(obj or 0, n[0], n[1], label) for _, obj, n, label in parse_prompts(point or [], "--point", False)],
        [(index if obj is None else obj, n) for index, (_, obj, n, _) in enumerate(parse_prompts(box or [], "--box", False))],
        lambda obj: f"object {obj}",
    )
    automatic = None
    if auto:
        automatic = MaskGenerationSettings(
            points_per_batch=points_per_batch, points_per_crop=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_thresh, crops_n_layers=crop_layers,
        )

    result = segment_image(bundle, image, out, prompts, None if single_mask is None else not single_mask, automatic, say)
    typer.echo(f"{result['objects']} objects, {len(result['masks'])} masks in {result['seconds']} s -> {out}")
    if auto and not result["objects"]:
        typer.echo("hint: no mask passed the filters; lower --pred-iou-thresh and --stability-thresh "
                   "(untrained or random weights score low) or raise --points-per-side", err=True)


@app.command(epilog=examples(
    "edgetam-export track data/videos/bedroom --bundle models/edgetam-xnnpack --point 0:1:210,350 "
    "--box 30:2:500,150,800,450 --out out/bedroom",
    "edgetam-export track clip.mp4 --bundle DIR --mask 0:3:my_mask.png --reverse --out out/masked",
))
def track(
    video: Annotated[Path, typer.Argument(help="Folder of frames or a video file.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder.")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (masks/, overlay.mp4, summary.json).")],
    point: Annotated[
        Optional[list[str]], typer.Option("--point", help="FRAME:OBJ:X,Y[,LABEL] in video pixels; LABEL 1 or 0.")
    ] = None,
    box: Annotated[Optional[list[str]], typer.Option("--box", help="FRAME:OBJ:X0,Y0,X1,Y1 in video pixels.")] = None,
    mask: Annotated[
        Optional[list[str]],
        typer.Option("--mask", help="FRAME:OBJ:PNG, a picture of the video's size; nonzero pixels are the object."),
    ] = None,
    reverse: Annotated[bool, typer.Option("--reverse", help="Also track back from the first prompt to frame 0.")] = False,
    fps: Annotated[float, typer.Option("--fps", help="Frame rate of overlay.mp4.")] = 24.0,
) -> None:
    """Track objects through a video from clicks, boxes or masks; write per-frame masks and an overlay video."""
    from edgetam_export.runtime.processing import group_prompts
    from edgetam_export.runtime.track import track_video

    def name(key: tuple[int, int]) -> str:
        return f"object {key[1]} on frame {key[0]}"

    prompts: dict = group_prompts(
        [((frame, obj), n[0], n[1], label) for frame, obj, n, label in parse_prompts(point or [], "--point", True)],
        [((frame, obj), n) for frame, obj, n, _ in parse_prompts(box or [], "--box", True)], name,
    )
    for text in mask or []:
        frame, obj, path = (text.split(":", 2) + ["", ""])[:3]
        if not (frame.isdigit() and obj.isdigit() and path):
            raise EdgeTamExportError(f"--mask '{text}' is not FRAME:OBJ:PNG")
        key = (int(frame), int(obj))
        if isinstance(prompts.get(key), Path):
            raise EdgeTamExportError(f"{name(key)} has several masks; give one")
        if key in prompts:
            raise EdgeTamExportError(f"{name(key)} has a mask and other prompts there; a mask prompt stands alone")
        prompts[key] = Path(path)

    summary = track_video(bundle, video, out, prompts, reverse, fps, say)
    typer.echo(
        f"tracked {len(summary['objects'])} objects over {summary['frames_tracked']} frames in {summary['seconds']} s "
        f"({summary['frames_per_second']} frames/s) -> {out}"
    )
