"""`edgetam-export`: a thin Typer layer over the Python API (every command is a few lines over it).

`app.py` holds the Typer app and what commands share; `bundles.py`, `run.py` and `bench.py` register the commands,
in the order `--help` lists them.
"""

from __future__ import annotations

import errno
import sys

import typer

from edgetam_export.cli import bench, bundles, run  # noqa: F401  (register the commands)
from edgetam_export.cli.app import app
from edgetam_export.cli.bench import object_counts
from edgetam_export.errors import EdgeTamExportError

__all__ = ["app", "main", "object_counts"]


def main() -> None:
    """Entry point: user errors become one line on stderr and exit status 2, never a traceback.

    SIGTERM ends the command like Ctrl-C, so partly written outputs are removed on the way out.
    """
    from edgetam_export.safe_output import terminate_on_sigterm

    terminate_on_sigterm()
    try:
        # Without standalone mode Typer returns the code of `typer.Exit(n)` (a failed check) and 130 for
        # Ctrl-C, instead of exiting: both must reach the shell.
        code = app(standalone_mode=False)
    except EdgeTamExportError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except _USAGE_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # a bare command group: its help, as a user expects
            typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        command = exc.ctx.command_path if exc.ctx else "edgetam-export"
        message = exc.format_message().replace("Value error, ", "").rstrip(".")
        typer.echo(f"error: {message}; see '{command} --help'", err=True)
        sys.exit(2)
    except OSError as exc:
        if exc.errno not in _PATH_PROBLEMS:
            raise
        typer.echo(f"error: {exc.strerror} for '{exc.filename}'; {_PATH_PROBLEMS[exc.errno]}", err=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        code = INTERRUPTED
    except typer.Exit as exc:
        code = exc.exit_code
    if code == INTERRUPTED:
        typer.echo("interrupted", err=True)
    sys.exit(code if isinstance(code, int) else 0)


#: Operating-system errors that are the user's path or disk, not a bug, with the fix.
_PATH_PROBLEMS = {
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOSPC: "free some disk space or choose another folder",
    errno.EDQUOT: "free some disk space or choose another folder",
    errno.EACCES: "choose a path you may read and write",
    errno.EROFS: "choose a folder on a writable disk",
}

#: Exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


#: Typer's usage-error class (its own copy of click's), reached through the public BadParameter.
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
