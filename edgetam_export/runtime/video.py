"""Video frames from a folder of images or a video file, read one at a time (never all in memory)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.runtime.processing import as_displayed_rgb, load_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm"}


def natural_key(path: Path) -> list:
    """Sort key that orders numbers by value: frame_2 before frame_10 (as strings, 10 comes first)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


class VideoFrames:
    """Frames of a video, all of one size, addressed by index."""

    def __init__(self, source: str | Path | list[Image.Image]) -> None:
        self._images: list[Image.Image] | None = None
        self._paths: list[Path] | None = None
        self._reader = None
        if isinstance(source, list):
            self._images = [as_displayed_rgb(image) for image in source]
            count = len(self._images)
            self.source = "images"
        else:
            path = Path(source)
            self.source = str(path)
            if path.is_dir():
                self._paths = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=natural_key)
                count = len(self._paths)
            elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
                import imageio.v2 as imageio

                try:
                    self._reader = imageio.get_reader(str(path))
                    count = self._reader.count_frames()
                except (OSError, RuntimeError, ValueError) as exc:
                    raise EdgeTamExportError(f"cannot read video '{path}' ({short_reason(exc)})") from None
            elif not path.exists():
                raise EdgeTamExportError(f"video '{path}' does not exist; pass a folder of frames or a video file")
            else:
                raise EdgeTamExportError(
                    f"'{path}' is not a folder of frames or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})"
                )
        if count == 0:
            raise EdgeTamExportError(f"no frames found in '{self.source}'")
        self.count = count
        first = self.frame(0)
        self.width, self.height = first.width, first.height

    def __len__(self) -> int:
        return self.count

    def frame(self, index: int) -> Image.Image:
        """Frame `index` as an RGB image; frames of another size than the first are refused."""
        if not 0 <= index < self.count:
            raise EdgeTamExportError(f"frame {index} does not exist: the video has frames 0 to {self.count - 1}")
        if self._images is not None:
            image = self._images[index]
        elif self._paths is not None:
            try:
                image = load_image(self._paths[index])
            except EdgeTamExportError:
                raise EdgeTamExportError(f"frame {index} ('{self._paths[index].name}') cannot be decoded") from None
        else:
            image = Image.fromarray(np.asarray(self._reader.get_data(index))[..., :3])
        if hasattr(self, "width") and (image.width, image.height) != (self.width, self.height):
            raise EdgeTamExportError(
                f"frame {index} is {image.width}x{image.height} but the video is {self.width}x{self.height}; "
                "all frames must have one size"
            )
        return image
