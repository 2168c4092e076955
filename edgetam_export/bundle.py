"""Bundle folders: one artifact per stage plus `manifest.json`, written atomically and checked on load.

The manifest is the contract an app reads: format version, model source and hashes, the recipe,
each stage's IO spec, artifact checksums and sizes, tool versions and the parity results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError
from edgetam_export.stages.spec import StageSpec, TensorSpec

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


def sha256_of(path: Path) -> str:
    """Checksum of a file, or of every file in a directory artifact (an .mlpackage) in sorted order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


@contextlib.contextmanager
def staging_directory(out: Path) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out` in one rename.

    An interrupted or failed export leaves `out` as it was (absent, or the previous bundle).
    """
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise EdgeTamExportError(f"cannot write the bundle to '{out}' ({exc.strerror}); choose another --out") from None
    try:
        yield staging
        if out.exists():
            previous = out.with_name(f".{out.name}.previous")
            shutil.rmtree(previous, ignore_errors=True)
            os.replace(out, previous)
            os.replace(staging, out)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def spec_from_json(data: dict) -> StageSpec:
    def tensor(t: dict) -> TensorSpec:
        return TensorSpec(t["name"], tuple(t["shape"]), t["dtype"], t["description"])

    return StageSpec(
        name=data["name"],
        description=data["description"],
        inputs=tuple(tensor(t) for t in data["inputs"]),
        outputs=tuple(tensor(t) for t in data["outputs"]),
        max_objects=int(data["max_objects"]),
    )


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose manifest and artifacts have been checked."""

    path: Path
    manifest: dict

    @property
    def backend(self) -> str:
        return self.manifest["recipe"]["backend"]

    @property
    def stage_names(self) -> list[str]:
        return list(self.manifest["stages"])

    def spec(self, stage: str) -> StageSpec:
        return spec_from_json(self.manifest["stages"][stage]["spec"])

    def artifact(self, stage: str) -> Path:
        return self.path / self.manifest["stages"][stage]["artifact"]


def write_manifest(folder: Path, manifest: dict) -> None:
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def read_bundle(path: Path | str, *, check_checksums: bool = True) -> Bundle:
    """Open a bundle, refusing a missing, newer-format or tampered one with a one-line reason."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if not path.is_dir():
        raise EdgeTamExportError(f"bundle '{path}' does not exist; run 'edgetam-export export --out {path}' first")
    if not manifest_path.is_file():
        raise EdgeTamExportError(f"'{path}' is not a bundle (no {MANIFEST_NAME}); point to a folder written by export")
    try:
        manifest = json.loads(manifest_path.read_text())
        version = int(manifest["format_version"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise EdgeTamExportError(f"'{manifest_path}' is corrupt; re-export the bundle") from None
    if version > FORMAT_VERSION:
        raise EdgeTamExportError(
            f"bundle '{path}' has format version {version}, newer than this edgetam-export reads "
            f"({FORMAT_VERSION}); upgrade edgetam-export"
        )
    for stage, record in manifest.get("stages", {}).items():
        artifact = path / record["artifact"]
        if not artifact.exists():
            raise EdgeTamExportError(f"bundle '{path}' lacks the {stage} artifact '{record['artifact']}'; re-export it")
        if check_checksums and sha256_of(artifact) != record["sha256"]:
            raise EdgeTamExportError(
                f"bundle '{path}': {record['artifact']} does not match its manifest checksum (modified or "
                "corrupt); re-export the bundle"
            )
    return Bundle(path=path, manifest=manifest)
