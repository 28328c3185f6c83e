"""The tracking store as mlpipe uses it: experiments, stage runs, queries, clean-up.

Public here: :func:`collect_garbage` (what ``mlpipe gc`` runs), :func:`redact` (a
URL with its passwords hidden, as mlpipe shows every URL) and :func:`scrub` (a
text, such as an error message, with the passwords of a URL hidden).
"""

from mlpipe.tracking._gc import collect_garbage
from mlpipe.tracking._store import redact, scrub

__all__ = ["collect_garbage", "redact", "scrub"]
