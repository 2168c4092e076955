"""Where the sample pictures for parity and benchmarks live, the check of a user-given folder, and their download.

Standard library only (Pillow for the picture check), so commands can refuse a wrong --data before loading any model.
"""

from __future__ import annotations

import hashlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError, short_reason

#: Where the sample images live: $EDGETAM_EXPORT_DATA, else ../shared/data beside the checkout.
DATA_ENV = "EDGETAM_EXPORT_DATA"


def default_data_dir() -> Path | None:
    """$EDGETAM_EXPORT_DATA (which must then hold the pictures: a typo never falls back silently), else ./data
    where `sample-data` wrote it, else ../shared/data or ./shared/data, else None (synthetic pictures; parity
    reports and manifests say so)."""
    chosen = os.environ.get(DATA_ENV)
    if chosen:
        try:
            return check_data_dir(Path(chosen), option=f"{DATA_ENV}")
        except EdgeTamExportError as exc:
            raise EdgeTamExportError(f"{exc}, or unset {DATA_ENV}") from None
    downloaded = Path.cwd() / "data"
    if (downloaded / "sample-data.json").is_file():
        return downloaded
    for candidate in (Path.cwd().parent / "shared" / "data", Path.cwd() / "shared" / "data"):
        if (candidate / "images").is_dir():
            return candidate
    return None


def check_data_dir(data_dir: Path | None, option: str = "--data") -> Path | None:
    """Check a user-given data folder before any long work: it must hold the parity pictures, decodable."""
    if data_dir is None:
        return None
    data_dir = Path(data_dir)
    needed = [data_dir / "images" / "truck.jpg", data_dir / "images" / "groceries.jpg"]
    if not data_dir.is_dir():
        raise EdgeTamExportError(
            f"{option} '{data_dir}' does not exist; pass the folder that holds images/ and videos/ "
            "('edgetam-export sample-data' downloads it)"
        )
    absent = [str(p.relative_to(data_dir)) for p in needed if not p.is_file()]
    if absent or len(bedroom_frames(data_dir)) < 6:
        absent += [] if absent else ["videos/bedroom/ with at least 6 .jpg frames"]
        raise EdgeTamExportError(f"{option} '{data_dir}' lacks {', '.join(absent)}; pass the shared data folder")
    from PIL import Image

    for picture in [*needed, *bedroom_frames(data_dir)[:6]]:
        try:
            with Image.open(picture) as opened:
                opened.verify()
        except Exception:  # Pillow raises assorted errors on damaged files
            raise EdgeTamExportError(
                f"{option} '{data_dir}': {picture.relative_to(data_dir)} is not a readable picture; fetch the sample "
                "data again"
            ) from None
    return data_dir


def bedroom_frames(data_dir: Path) -> list[Path]:
    """The frames of the shared 200-frame clip `videos/bedroom`, in order."""
    return sorted((Path(data_dir) / "videos" / "bedroom").glob("*.jpg"))


#: Where `edgetam-export sample-data` downloads from: EdgeTAM's notebooks (images/, videos/bedroom/), Apache 2.0, at
#: the commit whose 203 files `sample_data_files.json` lists (every one checked against it here).
SAMPLE_DATA_URL = "https://raw.githubusercontent.com/facebookresearch/EdgeTAM/9cc44bfe9e16cc374242917b91283c718410ea87/notebooks"
#: Relative path -> [sha256, size] of every sample file; a download must match it byte for byte.
SAMPLE_FILES = Path(__file__).with_name("sample_data_files.json")


def sample_files() -> dict[str, tuple[str, int]]:
    return {path: (digest, size) for path, (digest, size) in json.loads(SAMPLE_FILES.read_text()).items()}


def download_sample_data(
    out: Path, base_url: str = SAMPLE_DATA_URL, progress: Callable[[str], None] | None = None, workers: int = 8
) -> Path:
    """Download the sample pictures and the bedroom clip into `out`, every file checked against its sha256.

    The folder is written whole or not at all (a failed or interrupted download leaves nothing at `out`), and
    replaces only an earlier sample-data download. Returns `out`.
    """
    from edgetam_export.progress import Progress
    from edgetam_export.safe_output import SAMPLE_DATA, staged_output, write_text_atomic

    files = sample_files()
    base_url = base_url.rstrip("/")
    if not base_url.startswith(("http://", "https://", "file:")):
        raise EdgeTamExportError(f"--base-url '{base_url}' is not an http(s) or file URL")
    counter = Progress("sample-data: file", len(files), progress)
    with staged_output(out, SAMPLE_DATA) as staging:

        def fetch(relative: str) -> None:
            digest, size = files[relative]
            url = f"{base_url}/{relative}"
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    body = response.read(size + 1)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise EdgeTamExportError(f"cannot download {url} ({short_reason(exc)}); check the network or --base-url")
            if hashlib.sha256(body).hexdigest() != digest:
                raise EdgeTamExportError(
                    f"{url} is not the expected file (sha256 or size differs); nothing was written"
                )
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(body)

        with ThreadPoolExecutor(max_workers=workers) as pool:
            for relative, done in zip(files, pool.map(fetch, files)):
                counter.advance(note=relative)
        write_text_atomic(staging / SAMPLE_DATA.index_file,
                          json.dumps({"source": base_url, "files": len(files)}, indent=2) + "\n")
    return Path(out)
