"""Output folders that are written whole or not at all, and never replace anything but our own output.

Every command that writes a folder (`export`, `segment`, `track`) goes through `staged_output`:
the work happens in a hidden staging folder beside the target, marked with the writing process's
id, and only a complete result is swapped into place in one atomic exchange (Linux `renameat2`,
macOS `renamex_np`), so a crash at any point leaves either the previous folder or the new one.
A target is replaced only if it is absent, empty, or an output of the same kind that we wrote
(and, for bundles, only when the caller asked for it). Standard library only: the runtime uses it.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edgetam_export.errors import EdgeTamExportError

#: File inside a staging folder that names the process writing it (so a stale one can be removed).
STAGING_MARKER = ".edgetam-export-staging"
_STAGING_SUFFIX = ".partial"


def _bundle_files(index: dict) -> Callable[[str], bool]:
    artifacts = {record.get("artifact") for record in (index.get("stages") or {}).values() if isinstance(record, dict)}
    return lambda path: path in ("manifest.json", "README.md") or path.split("/")[0] in artifacts


def _segmentation_files(index: dict) -> Callable[[str], bool]:
    masks = {record.get("file") for record in index.get("masks") or [] if isinstance(record, dict)}
    return lambda path: path in ("result.json", "overlay.png", "masks") or path in masks


def _tracking_files(index: dict) -> Callable[[str], bool]:
    return lambda path: path in ("summary.json", "overlay.mp4", "masks") or bool(
        re.fullmatch(r"masks/-?\d+(/\d+\.png)?", path)
    )


@dataclass(frozen=True)
class OutputKind:
    """A kind of output folder: recognised by a JSON index file of ours holding certain keys, and
    replaceable only while every file in it is one that such an output consists of."""

    name: str
    index_file: str
    keys: tuple[str, ...]
    layout: Callable[[dict], Callable[[str], bool]]  # index -> is this relative path part of the output?
    replace_flag: str | None = None  # the flag a user passes to replace one (None: replaced freely)

    def index(self, folder: Path) -> dict | None:
        """The parsed index file if `folder` is an output of this kind, else None."""
        try:
            data = json.loads((folder / self.index_file).read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and all(key in data for key in self.keys) else None

    def foreign_files(self, folder: Path, index: dict) -> list[str]:
        """Files and folders in `folder` that an output of this kind does not consist of (the user's)."""
        ours = self.layout(index)
        return [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*"))
                if not ours(p.relative_to(folder).as_posix())]


def _sample_data_files(index: dict) -> Callable[[str], bool]:
    return lambda path: path in ("sample-data.json", "images", "videos", "videos/bedroom") or bool(
        re.fullmatch(r"images/\w+\.jpg|videos/bedroom/\d+\.jpg", path))


BUNDLE = OutputKind("bundle", "manifest.json", ("format_version", "stages"), _bundle_files, replace_flag="--force")
SEGMENTATION = OutputKind("segmentation result", "result.json", ("mode", "masks"), _segmentation_files)
TRACKING = OutputKind("tracking result", "summary.json", ("frames_tracked", "objects"), _tracking_files)
SAMPLE_DATA = OutputKind("sample-data download", "sample-data.json", ("source", "files"), _sample_data_files)


def check_target(out: Path, kind: OutputKind, replace: bool = False) -> None:
    """Refuse, in one line, a target that writing `kind` there could lose user data in."""
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise EdgeTamExportError(f"'{out}' is a file, not a folder; pass a new folder path to --out")
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return
    index = kind.index(out)
    if index is not None:
        foreign = kind.foreign_files(out, index)
        if foreign:
            raise EdgeTamExportError(
                f"'{out}' holds a {kind.name} and also files it never wrote ({len(foreign)}, e.g. '{foreign[0]}'); "
                "move them away or choose another --out"
            )
        if kind.replace_flag and not replace:
            raise EdgeTamExportError(
                f"'{out}' holds a {kind.name} already; pass {kind.replace_flag} to replace it, or choose another --out"
            )
        return
    raise EdgeTamExportError(
        f"'{out}' is a folder that is not a {kind.name} written by edgetam-export ({len(entries)} entries, e.g. "
        f"'{sorted(entries)[0]}'); it is never replaced: choose a new or empty --out"
    )


#: Key of every JSON report of ours, naming the command that wrote it; Markdown reports open with `MARKDOWN_MARKER`.
REPORT_MARKER = "written_by"
MARKDOWN_MARKER = "<!-- written by edgetam-export"
#: Keys by which reports written before the marker existed are recognised (parity reports, bench results).
_LEGACY_REPORT_KEYS = (
    {"bundle", "recipe", "runtime", "passed", "thresholds", "results"},
    {"schema_version", "machine", "stages", "video", "device_runs"},
)
_LEGACY_MARKDOWN = "# edgetam-export benchmark report"


def is_our_report(path: Path) -> bool:
    """Whether the file at `path` is a report this tool wrote (so replacing it loses nothing of the user's)."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    if text.startswith((MARKDOWN_MARKER, _LEGACY_MARKDOWN)):
        return True
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return isinstance(data, dict) and (
        str(data.get(REPORT_MARKER, "")).startswith("edgetam-export") or any(keys <= set(data) for keys in _LEGACY_REPORT_KEYS)
    )


def enclosing_output(path: Path) -> tuple[OutputKind, Path] | None:
    """The output folder of ours (bundle, segmentation or tracking result) that `path` lies in, if any."""
    for folder in Path(path).resolve().parents:
        for kind in (BUNDLE, SEGMENTATION, TRACKING):
            if kind.index(folder) is not None:
                return kind, folder
    return None


def check_report_target(path: Path, option: str) -> None:
    """A report goes to a new file or replaces a report of ours; never a user's file, never inside an output folder
    (a report in a bundle would overwrite or orphan its files). Checked before a long run and again before writing."""
    path = Path(path)
    check_writable_file(path, option)
    inside = enclosing_output(path)
    if inside is not None:
        kind, folder = inside
        raise EdgeTamExportError(f"{option} '{path}' lies inside the {kind.name} '{folder}'; write reports outside it")
    if (path.exists() or path.is_symlink()) and (path.is_symlink() or not is_our_report(path)):
        raise EdgeTamExportError(
            f"{option} '{path}' exists and is not a report written by edgetam-export; it is never replaced: choose "
            "a new file name"
        )


def check_writable_file(path: Path, option: str) -> None:
    """Fail at once, before any long run, if a report file could not be written at `path`."""
    path = Path(path)
    if path.is_dir():
        raise EdgeTamExportError(f"{option} '{path}' is a folder; give a file path")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    writable = folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    if path.exists():
        writable = writable and os.access(path, os.W_OK)
    if not writable:
        raise EdgeTamExportError(f"cannot write {option} '{path}' (permission denied or not a folder); choose another path")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file through a temporary sibling and a rename, so a reader never sees half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove staging folders of ours for `out` whose writing process is gone (killed, crashed)."""
    removed = []
    for candidate in out.parent.glob(f".{out.name}.*{_STAGING_SUFFIX}"):
        marker = candidate / STAGING_MARKER
        try:
            pid = int(marker.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # not ours: leave it
        if pid != os.getpid() and not _process_alive(pid):
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths; False where the OS offers no such call."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd, rename_exchange = -100, 2
        result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        rename_swap = 2
        result = libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap)
    else:
        return False
    if result != 0:
        errno = ctypes.get_errno()
        if errno in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: the file system cannot exchange
            return False
        raise OSError(errno, os.strerror(errno), str(b))
    return True


def _move_into_place(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
        return
    if _exchange(staging, out):
        shutil.rmtree(staging, ignore_errors=True)  # `staging` now holds the previous output
        return
    # No atomic exchange on this file system: keep the previous output until the new one is in place.
    previous = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".previous", dir=out.parent))
    os.rmdir(previous)
    os.rename(out, previous)
    os.rename(staging, out)
    shutil.rmtree(previous, ignore_errors=True)


@contextlib.contextmanager
def staged_output(out: Path | str, kind: OutputKind, *, replace: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; when the block succeeds, it becomes `out` atomically.

    On any failure (an exception, Ctrl-C, SIGTERM through `terminate_on_sigterm`) the staging folder
    is removed and `out` is untouched. The folder gets the permissions the umask allows.
    """
    out = Path(out)
    check_target(out, kind, replace)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=_STAGING_SUFFIX, dir=out.parent))
        os.chmod(staging, 0o777 & ~current_umask())
        (staging / STAGING_MARKER).write_text(f"{os.getpid()}\n")
    except OSError as exc:
        raise EdgeTamExportError(
            f"cannot write the {kind.name} to '{out}' ({exc.strerror}); choose another --out"
        ) from None
    try:
        yield staging
        (staging / STAGING_MARKER).unlink()
        check_target(out, kind, replace)  # nothing of the user's appeared there meanwhile
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def terminate_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so that `finally` blocks (staging clean-up) run, as on Ctrl-C."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
