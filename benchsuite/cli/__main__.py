"""``python -m benchsuite.cli``: the same command as the ``benchsuite`` script."""

from benchsuite.cli.console import main

main()
