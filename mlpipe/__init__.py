"""mlpipe: MLflow for a whole data-science chain, not single runs.

Names are imported on first use, so ``import mlpipe`` and the ``mlpipe`` command
start fast and load scikit-learn or MLflow only when a command needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mlpipe._version import __version__

if TYPE_CHECKING:
    from mlpipe._cache import load_stage
    from mlpipe._graph import lineage_graph
    from mlpipe._pipeline import LineagePipeline
    from mlpipe._promote import promote
    from mlpipe._registry import ALGORITHMS, LOGICS, algorithm, logic
    from mlpipe._reproduce import Reproduction, reproduce
    from mlpipe._score import score
    from mlpipe.data import Dataset, fingerprint, load
    from mlpipe.tracking._query import (
        Chain,
        LineageEntry,
        descendants,
        find_chain,
        find_run,
        lineage,
        runs,
    )

_WHERE = {
    "ALGORITHMS": "mlpipe._registry",
    "LOGICS": "mlpipe._registry",
    "algorithm": "mlpipe._registry",
    "logic": "mlpipe._registry",
    "Chain": "mlpipe.tracking._query",
    "LineageEntry": "mlpipe.tracking._query",
    "descendants": "mlpipe.tracking._query",
    "find_chain": "mlpipe.tracking._query",
    "find_run": "mlpipe.tracking._query",
    "load_stage": "mlpipe._cache",
    "lineage": "mlpipe.tracking._query",
    "runs": "mlpipe.tracking._query",
    "Dataset": "mlpipe.data",
    "fingerprint": "mlpipe.data",
    "load": "mlpipe.data",
    "LineagePipeline": "mlpipe._pipeline",
    "lineage_graph": "mlpipe._graph",
    "promote": "mlpipe._promote",
    "Reproduction": "mlpipe._reproduce",
    "reproduce": "mlpipe._reproduce",
    "score": "mlpipe._score",
}

__all__ = [
    "ALGORITHMS",
    "LOGICS",
    "Chain",
    "Dataset",
    "LineageEntry",
    "LineagePipeline",
    "Reproduction",
    "__version__",
    "algorithm",
    "descendants",
    "find_chain",
    "find_run",
    "fingerprint",
    "lineage",
    "lineage_graph",
    "load",
    "load_stage",
    "logic",
    "promote",
    "reproduce",
    "runs",
    "score",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mlpipe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
