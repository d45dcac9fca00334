"""The ``splitnet`` command line."""

from splitnet.cli.main import main

__all__ = ["main"]
