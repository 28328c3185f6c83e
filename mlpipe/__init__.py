"""mlpipe: MLflow for a whole data-science chain, not single runs."""

from mlpipe._graph import lineage_graph
from mlpipe._pipeline import LineagePipeline
from mlpipe._version import __version__
from mlpipe.data import Dataset, fingerprint, load
from mlpipe.tracking._query import Chain, LineageEntry, descendants, find_chain, lineage, runs

__all__ = [
    "Chain",
    "Dataset",
    "LineageEntry",
    "LineagePipeline",
    "__version__",
    "descendants",
    "find_chain",
    "fingerprint",
    "lineage",
    "lineage_graph",
    "load",
    "runs",
]
