"""The one exception type that reaches users: a problem with their input, and its fix."""


class EdgeTamExportError(Exception):
    """A user-facing error: the message names the problem and how to fix it.

    The CLI prints it as a single line and exits with status 2; the Python API lets it propagate.
    """

    exit_code = 2
