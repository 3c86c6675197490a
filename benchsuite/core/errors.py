"""The error every bad input becomes: one line, exit code 2. Its own module so the command line
can name it without importing torch (``benchsuite --help`` stays fast)."""


class BadInput(ValueError):
    """A one-line message naming the bad value and the valid choices (exit code 2)."""
