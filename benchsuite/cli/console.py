"""The ``benchsuite`` console script: a Ctrl-C while the command is still importing (torch, Ray,
MLflow take seconds) ends with exit 130 too, not with a traceback."""

from __future__ import annotations

import sys


def main() -> None:  # pragma: no cover - exercised through the installed script
    try:
        from benchsuite.cli.app import main as cli_main
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    cli_main()
