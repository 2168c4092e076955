"""The one exception type that reaches users: a problem with their input, and its fix."""


class EdgeTamExportError(Exception):
    """A user-facing error: the message names the problem and how to fix it.

    The CLI prints it as a single line and exits with status 2; the Python API lets it propagate.
    """

    exit_code = 2


def short_reason(error: BaseException | str, limit: int = 120) -> str:
    """The last line of an underlying error, cut at a word boundary, for the middle of a one-line message."""
    text = str(error).strip()
    reason = text.splitlines()[-1].strip() if text else type(error).__name__
    if len(reason) > limit:
        reason = reason[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    return reason
