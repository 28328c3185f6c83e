"""Data versions: sources, fingerprints and load runs."""

from mlpipe.data._dataset import Dataset, load
from mlpipe.data._fingerprint import fingerprint

__all__ = ["Dataset", "fingerprint", "load"]
