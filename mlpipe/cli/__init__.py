"""The ``mlpipe`` command."""

from mlpipe.cli._main import main

__all__ = ["main"]
