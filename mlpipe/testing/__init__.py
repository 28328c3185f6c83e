"""Property-based tests of raw-input models, for your own test suite.

Hypothesis strategies that draw raw frames shaped like a model's training input
(:func:`raw_frames`, :func:`columns_of`), and :func:`check_model`, which runs
valid and hostile frames through a model, in process and served, and reports
crashes and inconsistencies. Needs the optional dependencies of
``pip install 'mlpipe[testing]'`` (Hypothesis).
"""

try:
    import hypothesis  # noqa: F401
except ImportError as error:  # pragma: no cover - exercised in a test that hides hypothesis
    raise ImportError(
        "mlpipe.testing needs Hypothesis, an optional dependency of mlpipe: "
        "pip install 'mlpipe[testing]'"
    ) from error

from mlpipe.testing._check import Problem, Report, check_model
from mlpipe.testing._strategies import columns_of, raw_frames

__all__ = ["Problem", "Report", "check_model", "columns_of", "raw_frames"]
