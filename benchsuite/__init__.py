"""benchsuite: an equal-budget benchmark suite for neural-network pruning methods."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("benchsuite")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
