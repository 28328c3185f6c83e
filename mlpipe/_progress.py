"""Progress bars for long work, shown where a person watches and silent elsewhere.

A bar is drawn (with ``tqdm.auto``: a widget in a notebook, a line on a
terminal) when the environment variable ``MLPIPE_PROGRESS`` says ``1``, or, when
it is unset, when standard error is a terminal or the code runs in a Jupyter
kernel. ``MLPIPE_PROGRESS=0`` (which ``mlpipe -q`` sets) turns every bar off.
Output that goes to a file or a pipe (a CI log, ``mlpipe ... 2> log``, a test
that captures it) gets no bar.
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["PROGRESS_ENV", "bar", "shown"]

PROGRESS_ENV = "MLPIPE_PROGRESS"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


def shown() -> bool:
    """Whether progress bars are drawn now (read each time: the CLI sets the variable)."""
    value = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    return _on_terminal() or "ipykernel" in sys.modules


def _on_terminal() -> bool:
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def bar(desc: str, *, total: int | None = None, unit: str = "it", scale: bool = False) -> Any:
    """A ``tqdm`` bar for ``total`` steps (unknown: a count), or a silent stand-in.

    ``scale`` shows large counts as ``1.2M``.

    Use as a context manager and call ``update(n)``. The bar is removed when
    done (``leave=False``): what a command prints after it reads as without it.
    """
    if not shown():
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(
        desc=desc,
        total=total,
        unit=unit,
        unit_scale=scale,
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    )


class _Silent:
    """What :func:`bar` returns when no bar is shown: tqdm is not even imported."""

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int = 1) -> None:
        return None
