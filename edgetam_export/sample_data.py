"""Where the sample pictures for parity and benchmarks live, and the check of a user-given folder.

Standard library only, so commands can refuse a wrong --data before loading any model.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError

#: Where the sample images live: $EDGETAM_EXPORT_DATA, else ../shared/data beside the checkout.
DATA_ENV = "EDGETAM_EXPORT_DATA"


def default_data_dir() -> Path | None:
    candidates = [os.environ.get(DATA_ENV), Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    return None


def check_data_dir(data_dir: Path | None) -> Path | None:
    """Check a user-given data folder before any long work: it must hold the parity pictures."""
    if data_dir is None:
        return None
    data_dir = Path(data_dir)
    needed = [data_dir / "images" / "truck.jpg", data_dir / "images" / "groceries.jpg"]
    if not data_dir.is_dir():
        raise EdgeTamExportError(f"--data '{data_dir}' does not exist; pass the folder that holds images/ and videos/")
    absent = [str(p.relative_to(data_dir)) for p in needed if not p.is_file()]
    if absent or len(list((data_dir / "videos" / "bedroom").glob("*.jpg"))) < 6:
        absent += [] if absent else ["videos/bedroom/ with at least 6 .jpg frames"]
        raise EdgeTamExportError(f"--data '{data_dir}' lacks {', '.join(absent)}; pass the shared data folder")
    return data_dir


def bedroom_frames(data_dir: Path) -> list[Path]:
    """The frames of the shared 200-frame clip `videos/bedroom`, in order."""
    return sorted((Path(data_dir) / "videos" / "bedroom").glob("*.jpg"))
