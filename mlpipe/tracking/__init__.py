"""The tracking store as mlpipe uses it: experiments, stage runs, queries, clean-up.

Public here: :func:`collect_garbage` (what ``mlpipe gc`` runs) and :func:`redact`
(a URL with its password hidden, as mlpipe shows every URL).
"""

from mlpipe.tracking._gc import collect_garbage
from mlpipe.tracking._store import redact

__all__ = ["collect_garbage", "redact"]
