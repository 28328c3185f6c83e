"""mlpipe: MLflow for a whole data-science chain, not single runs."""

from mlpipe import _builtins  # noqa: F401  (registers the built-in logics and algorithms)
from mlpipe._graph import lineage_graph
from mlpipe._pipeline import LineagePipeline
from mlpipe._registry import ALGORITHMS, LOGICS, algorithm, logic
from mlpipe._version import __version__
from mlpipe.data import Dataset, fingerprint, load
from mlpipe.tracking._query import Chain, LineageEntry, descendants, find_chain, lineage, runs

__all__ = [
    "ALGORITHMS",
    "LOGICS",
    "Chain",
    "Dataset",
    "LineageEntry",
    "LineagePipeline",
    "__version__",
    "algorithm",
    "descendants",
    "find_chain",
    "fingerprint",
    "lineage",
    "lineage_graph",
    "load",
    "logic",
    "runs",
]
