"""mlpipe: MLflow for a whole data-science chain, not single runs."""

from mlpipe._pipeline import LineagePipeline
from mlpipe._version import __version__
from mlpipe.data import Dataset, fingerprint, load

__all__ = ["Dataset", "LineagePipeline", "__version__", "fingerprint", "load"]
