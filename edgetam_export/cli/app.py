"""The `edgetam-export` Typer app and what its commands share: options, progress lines, checks before work."""

from __future__ import annotations

import importlib.util
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from edgetam_export.errors import EdgeTamExportError

app = typer.Typer(
    name="edgetam-export",
    help="Export EdgeTAM to ExecuTorch, Core ML and ONNX bundles, verify them against transformers, run them.",
    epilog="Start with: edgetam-export export --model random --size tiny --out models/try-me, then "
    "edgetam-export segment IMAGE --bundle models/try-me --point X,Y --out out/try-me. "
    "Each command's --help has examples.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


class ModelSizeChoice(str, Enum):
    """Architectures for --model random or a checkpoint."""

    full = "full"
    tiny = "tiny"


class CoreMLRuntimeChoice(str, Enum):
    """What runs a Core ML bundle in verify."""

    mil_interpreter = "mil-interpreter"
    cpu_only = "CPU_ONLY"
    cpu_and_gpu = "CPU_AND_GPU"
    cpu_and_ne = "CPU_AND_NE"
    all = "ALL"


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"edgetam-export {version('edgetam-export')}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Export EdgeTAM to ExecuTorch, Core ML and ONNX bundles, verify them against transformers, run them."""


def examples(*lines: str) -> str:
    """A command's --help epilog: one example per line."""
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in lines)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help="Weights: 'random', a Hugging Face model folder, an original edgetam.pt, or a hub id "
        "(yonigozlan/edgetam-1).",
    ),
]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for --model random.")]
SizeOption = Annotated[
    ModelSizeChoice,
    typer.Option("--size", help="Architecture for --model random or a checkpoint: full (EdgeTAM) or tiny."),
]
DataOption = Annotated[
    Optional[Path],
    typer.Option("--data", help="Folder with images/ and videos/bedroom/ for parity inputs, as 'sample-data' writes it (default: "
                     "$EDGETAM_EXPORT_DATA, else ../shared/data, else synthetic pictures)."),
]


def say(message: str) -> None:
    typer.echo(f"  {message}", err=True)


def require_export_extra(command: str) -> None:
    """The export side (torch, transformers, the converters) is the [export] extra; the runtime is not."""
    missing = [name for name in ("torch", "transformers") if not installed(name)]
    if missing:
        raise EdgeTamExportError(
            f"'{command}' needs the PyTorch reference ({' and '.join(missing)} not installed); install the export "
            "extra: pip install 'edgetam-export[export]'"
        )


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module blocked with sys.modules[name] = None
        return False


def data_folder(data: Path | None) -> Path | None:
    """--data checked (or the default folder); when there is none, say at once that synthetic pictures stand in."""
    from edgetam_export.verification.sample_data import check_data_dir, default_data_dir

    folder = check_data_dir(data) or default_data_dir()
    if folder is None:
        say("no sample data (--data, $EDGETAM_EXPORT_DATA, ./data, ../shared/data): parity runs on synthetic pictures; "
             "'edgetam-export sample-data --out data' downloads the real ones")
    return folder


#: Most threads any runtime may be given (a typo of 100000 would otherwise start that many).


def check_range(option: str, value: int, low: int, high: int, hint: str = "") -> None:
    if not low <= value <= high:
        raise EdgeTamExportError(f"{option} must be from {low} to {high}, got {value}{hint}")


def check_report(path: Path | None, option: str) -> None:
    """Fail before a long run, not after it, when a report could not be written or would replace a user's file."""
    if path is not None:
        from edgetam_export.safe_output import check_report_target

        check_report_target(path, option)
