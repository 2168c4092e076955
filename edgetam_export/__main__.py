"""`python -m edgetam_export` is the same as the `edgetam-export` command."""

from edgetam_export.cli import main

main()
