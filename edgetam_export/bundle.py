"""Bundle folders: one artifact per stage plus `manifest.json`, written atomically and checked on load.

The manifest is the contract an app reads: format version, model source and hashes, the recipe,
each stage's IO spec, artifact checksums and sizes, tool versions and the parity results.
"""

from __future__ import annotations

import hashlib
import shutil
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError, short_reason
from edgetam_export.recipes import Recipe, recipe_from_dict
from edgetam_export.safe_output import BUNDLE, staged_output, write_text_atomic
from edgetam_export.stages.spec import (
    CAPACITY_BOUNDS,
    STAGE_NAMES,
    StageShapes,
    StageSpec,
    TensorSpec,
    TrackingSettings,
    capacity_problem,
)

#: What each manifest format version holds; readers accept every version up to FORMAT_VERSION.
FORMAT_HISTORY = {
    1: "stage contracts, artifact checksums and sizes, model and recipe records, tool versions, parity summary",
    2: "always `tracking` (the model's host-side settings) and `shapes.pointer_temporal_encoding`; "
       "`parity.pictures` (sample or synthetic parity inputs); a model card `README.md` beside the manifest",
}
FORMAT_VERSION = max(FORMAT_HISTORY)
MANIFEST_NAME = "manifest.json"
#: `--model` / manifest source of seeded random weights.
RANDOM_SOURCE = "random"


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
class ModelRecord:
    """Where a bundle's weights came from, and their hashes (to reload and check them)."""

    source: str
    weights_sha256: str
    config_sha256: str | None = None
    size: str | None = None
    seed: int | None = None
    config_overrides: dict | None = None  # a random variant's config fields

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "config_overrides" or v}

    def random_weights_notice(self) -> str | None:
        """What every output of a random-weights bundle must say: its masks look like noise by design."""
        if self.source != RANDOM_SOURCE:
            return None
        return (f"random weights (seed {self.seed}): masks are not meaningful; export trained weights with "
                "--model path/to/edgetam.pt or a model folder")


@dataclass(frozen=True)
class StageRecord:
    """One stage of a bundle: its artifact (file name, checksum, size), contract and backend facts."""

    artifact: str
    sha256: str
    size_bytes: int
    spec: StageSpec
    backend: dict = field(default_factory=dict)  # delegation, precision, compute units, opset...
    export_seconds: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"artifact": self.artifact, "sha256": self.sha256, "size_bytes": self.size_bytes,
                "export_seconds": self.export_seconds, "backend": self.backend, "spec": self.spec.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> StageRecord:
        return cls(artifact=data["artifact"], sha256=data["sha256"], size_bytes=int(data["size_bytes"]),
                   spec=spec_from_json(data["spec"]), backend=dict(data.get("backend") or {}),
                   export_seconds=dict(data.get("export_seconds") or {}))


@dataclass(frozen=True)
class Manifest:
    """`manifest.json` as one typed object: everything an app or a command reads about a bundle.

    Format 1 manifests may lack `tracking` and `shapes.pointer_temporal_encoding`: they read with EdgeTAM's
    released settings (`FORMAT_HISTORY`).
    """

    format_version: int
    model: ModelRecord
    recipe: Recipe
    shapes: StageShapes
    stages: dict[str, StageRecord]
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    created: str = ""
    tools: dict = field(default_factory=dict)
    machine: dict = field(default_factory=dict)
    parity: dict | None = None

    def to_json(self) -> dict:
        document = {
            "format_version": self.format_version,
            "created": self.created,
            "model": self.model.to_json(),
            "recipe": self.recipe.to_json(),
            "shapes": self.shapes.to_json(),
            "tracking": self.tracking.to_json(),
            "stages": {name: record.to_json() for name, record in self.stages.items()},
            "tools": self.tools,
            "machine": self.machine,
        }
        return document | ({"parity": self.parity} if self.parity is not None else {})

    @classmethod
    def from_json(cls, data: dict, origin: Path) -> Manifest:
        """Check and type a parsed manifest, naming what is missing in one line."""
        _check_manifest(data, origin)
        try:
            return cls(
                format_version=int(data["format_version"]),
                model=ModelRecord(**data["model"]),
                recipe=recipe_from_dict(dict(data["recipe"]), f"in '{origin}'"),
                shapes=StageShapes(**data["shapes"]),
                stages={name: StageRecord.from_json(record) for name, record in data["stages"].items()},
                tracking=TrackingSettings.from_json(data.get("tracking")),
                created=str(data.get("created", "")),
                tools=dict(data.get("tools") or {}),
                machine=dict(data.get("machine") or {}),
                parity=data.get("parity"),
            )
        except (TypeError, KeyError, ValueError) as exc:
            raise EdgeTamExportError(f"'{origin}' is invalid ({short_reason(exc)}); re-export the bundle") from None


@dataclass(frozen=True)
class Bundle:
    """A bundle folder whose manifest and artifacts have been checked."""

    path: Path
    manifest: Manifest

    @property
    def backend(self) -> str:
        return self.manifest.recipe.backend

    @property
    def stage_names(self) -> list[str]:
        return list(self.manifest.stages)

    def spec(self, stage: str) -> StageSpec:
        return self.manifest.stages[stage].spec

    def artifact(self, stage: str) -> Path:
        return self.path / self.manifest.stages[stage].artifact


def write_manifest(folder: Path, manifest: Manifest) -> None:
    write_text_atomic(folder / MANIFEST_NAME, json.dumps(manifest.to_json(), indent=2, sort_keys=False) + "\n")


#: What every reader of a manifest relies on: key -> required type, nested for the dicts below.
_MANIFEST_SHAPE: dict = {
    "model": {"source": str, "weights_sha256": str},
    "recipe": {"name": str, "backend": str, "precision": str, "parity": dict},
    "shapes": {name: (int, bool) for name in (
        "image_size", "hidden_size", "memory_dim", "memory_tokens", "point_slots", "max_objects", "memory_slots",
        "pointer_slots", "temporal_encodings")},
    "stages": dict,
}
_STAGE_RECORD_SHAPE: dict = {
    "artifact": str, "sha256": str, "size_bytes": int,
    "spec": {"name": str, "description": str, "max_objects": int, "inputs": list, "outputs": list},
}


def _missing_keys(data: object, shape: dict, prefix: str) -> list[str]:
    """The dotted keys of `shape` that `data` lacks or holds with the wrong type."""
    if not isinstance(data, dict):
        return [prefix.rstrip(".") or "(top level)"]
    missing = []
    for key, wanted in shape.items():
        if isinstance(wanted, dict):
            missing += _missing_keys(data.get(key), wanted, f"{prefix}{key}.")
        elif not isinstance(data.get(key), wanted):
            missing.append(prefix + key)
    return missing


def _check_manifest(manifest: dict, manifest_path: Path) -> None:
    """Refuse a manifest that parses but lacks what readers need, naming the first missing keys."""
    missing = _missing_keys(manifest, _MANIFEST_SHAPE, "")
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version >= 2:  # what format 2 always writes
        missing += _missing_keys(manifest, {"tracking": dict, "shapes": {"pointer_temporal_encoding": bool}}, "")
    for stage, record in (manifest.get("stages") or {}).items() if isinstance(manifest.get("stages"), dict) else ():
        missing += _missing_keys(record, _STAGE_RECORD_SHAPE, f"stages.{stage}.")
        artifact = record.get("artifact") if isinstance(record, dict) else None
        if isinstance(artifact, str) and (Path(artifact).name != artifact or artifact in ("", ".", "..")):
            missing.append(f"stages.{stage}.artifact (must be a file name inside the bundle, got '{artifact}')")
    if isinstance(manifest.get("stages"), dict) and not manifest["stages"]:
        missing.append("stages (empty)")
    if missing:
        raise EdgeTamExportError(
            f"'{manifest_path}' is incomplete (missing or invalid: {', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}); re-export the bundle"
        )
    problem = _contract_problem(manifest)
    if problem:
        raise EdgeTamExportError(f"'{manifest_path}' is invalid: {problem}; re-export the bundle")


def _contract_problem(manifest: dict) -> str | None:
    """What makes a complete manifest unusable: a stage missing or unknown, a stage record of another stage, two
    stages on one file, or capacities out of bounds (memory slots of 1e9 would allocate terabytes)."""
    stages = manifest["stages"]
    absent = [name for name in STAGE_NAMES if name not in stages]
    if absent:
        return f"it lacks the stage {', '.join(absent)} (a bundle has {', '.join(STAGE_NAMES)})"
    unknown = [name for name in stages if name not in STAGE_NAMES]
    if unknown:
        return f"it names an unknown stage '{unknown[0]}' (a bundle has {', '.join(STAGE_NAMES)})"
    artifacts: dict[str, str] = {}
    for name, record in stages.items():
        if record["spec"]["name"] != name:
            return f"stage '{name}' carries the contract of '{record['spec']['name']}'"
        if record["artifact"] in artifacts:
            return f"stages '{artifacts[record['artifact']]}' and '{name}' point at one file '{record['artifact']}'"
        artifacts[record["artifact"]] = name
        if record["spec"]["max_objects"] != manifest["shapes"]["max_objects"]:
            return f"stage '{name}' takes {record['spec']['max_objects']} objects, the bundle {manifest['shapes']['max_objects']}"
    for capacity in CAPACITY_BOUNDS:
        problem = capacity_problem(capacity, manifest["shapes"][capacity], f"shapes.{capacity}")
        if problem:
            return problem
    return None


def read_bundle(path: Path | str, *, check_checksums: bool = True) -> Bundle:
    """Open a bundle, refusing a missing, newer-format or tampered one with a one-line reason."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME
    if path.exists() and not path.is_dir():
        raise EdgeTamExportError(f"'{path}' is a file, not a bundle folder; pass the folder that holds manifest.json")
    if not path.is_dir():
        raise EdgeTamExportError(f"bundle '{path}' does not exist; run 'edgetam-export export --out {path}' first")
    if not manifest_path.is_file():
        raise EdgeTamExportError(f"'{path}' is not a bundle (no {MANIFEST_NAME}); point to a folder written by export")
    try:
        manifest = json.loads(manifest_path.read_text())
        version = manifest["format_version"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise EdgeTamExportError(f"'{manifest_path}' is corrupt or unreadable; re-export the bundle") from None
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise EdgeTamExportError(
            f"'{manifest_path}' has format_version {version!r}, not a version number of 1 or more; re-export the bundle"
        )
    if version > FORMAT_VERSION:
        raise EdgeTamExportError(
            f"bundle '{path}' has format version {version}, newer than this edgetam-export reads "
            f"({FORMAT_VERSION}); upgrade edgetam-export"
        )
    typed = Manifest.from_json(manifest, manifest_path)
    for stage, record in typed.stages.items():
        artifact = path / record.artifact
        if not artifact.exists():
            raise EdgeTamExportError(f"bundle '{path}' lacks the {stage} artifact '{record.artifact}'; re-export it")
        if check_checksums and sha256_of(artifact) != record.sha256:
            raise EdgeTamExportError(
                f"bundle '{path}': {record.artifact} does not match its manifest checksum (modified or "
                "corrupt); re-export the bundle"
            )
    return Bundle(path=path, manifest=typed)


#: Backends the iOS demo app runs: Core ML natively (EdgeTAMCoreML), `.pte` programs through EdgeTAMExecuTorch.
APP_BACKENDS = ("coreml", "executorch")


def copy_bundle(source: Path | str, dest: Path | str, *, overwrite: bool = False,
                backends: tuple[str, ...] | None = None) -> Bundle:
    """Copy a bundle whose checksums verify to `dest` (the iOS demo's `Bundle/` folder, a device folder...).

    The copy is written whole or not at all and checked again before it is moved into place; `dest` may be
    absent or empty, and an existing bundle there is replaced only with `overwrite`.
    """
    bundle = read_bundle(source)
    target = Path(dest).resolve()
    if target == bundle.path.resolve() or bundle.path.resolve() in target.parents:
        raise EdgeTamExportError(
            f"'{dest}' lies inside the bundle '{bundle.path}' being copied; copy it to a folder outside the bundle"
        )
    if backends is not None and bundle.backend not in backends:
        raise EdgeTamExportError(
            f"'{bundle.path}' is a {bundle.backend} bundle ({bundle.manifest.recipe.name}); the iOS demo runs "
            f"{' and '.join(backends)} bundles: export one with a coreml-* or executorch-* recipe"
        )
    with staged_output(dest, BUNDLE, replace=overwrite) as staging:
        shutil.copy2(bundle.path / MANIFEST_NAME, staging / MANIFEST_NAME)
        card = bundle.path / "README.md"  # the model card (model_card.MODEL_CARD), where the bundle has one
        if card.is_file():
            shutil.copy2(card, staging / card.name)
        for record in bundle.manifest.stages.values():
            artifact = bundle.path / record.artifact
            if artifact.is_dir():
                shutil.copytree(artifact, staging / record.artifact)
            else:
                shutil.copy2(artifact, staging / record.artifact)
        read_bundle(staging)
    return read_bundle(dest, check_checksums=False)
