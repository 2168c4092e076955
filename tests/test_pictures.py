"""Pictures and frames as users have them: phone photos with EXIF orientation, 16-bit PNGs, frames numbered
without zero padding. Each gives the result of the picture as it is displayed, not a silent mistake."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from edgetam_export.runtime.outputs import load_mask
from edgetam_export.runtime.processing import load_image
from edgetam_export.runtime.video import VideoFrames

#: EXIF tag 0x0112 (Orientation); 6 means "rotate 90 degrees clockwise to display" (a phone held upright).
ORIENTATION = 0x0112


def _stored_sideways(picture: Image.Image, path) -> None:
    """Save `picture` as a phone does when held upright: pixels turned a quarter, EXIF orientation 6."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    picture.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)


def test_exif_orientation_gives_the_displayed_picture_and_its_masks(tiny_bundles, data_dir, tmp_path):
    from edgetam_export.runtime import EdgeTamPredictor

    truck = Image.open(data_dir / "images" / "truck.jpg").convert("RGB")
    _stored_sideways(truck, tmp_path / "phone.png")
    assert Image.open(tmp_path / "phone.png").size == (1200, 1800)  # stored sideways
    displayed = load_image(tmp_path / "phone.png")
    assert np.array_equal(np.asarray(displayed), np.asarray(truck))
    truck.save(tmp_path / "upright.png")
    predictor = EdgeTamPredictor.from_bundle(tiny_bundles["onnx-fp32"].path)
    # (1700, 1100) lies inside the displayed 1800x1200 picture but outside the stored 1200x1800 one.
    masks = [predictor.predict(predictor.set_image(tmp_path / name), points=[[[1700, 1100]]]).masks
             for name in ("phone.png", "upright.png")]
    assert masks[0].shape[-2:] == (1200, 1800)
    assert np.array_equal(masks[0], masks[1])


def test_sixteen_bit_png_is_scaled_not_clipped(data_dir, tmp_path):
    grey = np.asarray(Image.open(data_dir / "images" / "groceries.jpg").convert("L"))
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    loaded = np.asarray(load_image(tmp_path / "deep.png"))
    assert np.array_equal(loaded, np.repeat(grey[..., None], 3, axis=2))
    assert (loaded == 255).mean() < 0.05  # Pillow's own conversion turns almost every pixel white


def test_sixteen_bit_mask_keeps_every_nonzero_label(tmp_path):
    labels = np.zeros((20, 30), np.uint16)
    labels[5:10, 5:10] = 1  # a label map's object 1: scaling to 8 bits would round it away
    Image.fromarray(labels).save(tmp_path / "labels.png")
    assert load_mask(tmp_path / "labels.png").sum() == 25


def test_exif_orientation_of_a_mask_prompt_is_applied(tmp_path):
    drawn = np.zeros((40, 60), np.uint8)
    drawn[2:8, 40:58] = 255
    _stored_sideways(Image.fromarray(drawn), tmp_path / "mask.png")
    assert np.array_equal(load_mask(tmp_path / "mask.png"), drawn > 0)


@pytest.mark.parametrize("pattern", ["frame_{}.jpg", "{}.jpg", "clip-{}-left.jpg"])
def test_frames_are_ordered_by_their_numbers(pattern, data_dir, tmp_path):
    """frame_2 comes before frame_10 (as text, 10 sorts first)."""
    bedroom = sorted((data_dir / "videos" / "bedroom").glob("*.jpg"))[:12]
    for number, frame in enumerate(bedroom, start=1):
        shutil.copy(frame, tmp_path / pattern.format(number))
    frames = VideoFrames(tmp_path)
    for index in (0, 1, 8, 9, 11):
        assert np.array_equal(np.asarray(frames.frame(index)), np.asarray(Image.open(bedroom[index]).convert("RGB")))
