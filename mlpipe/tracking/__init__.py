"""The tracking store as mlpipe uses it: experiments, stage runs, queries, clean-up.

Public here: :func:`collect_garbage` (what ``mlpipe gc`` runs), :func:`redact` (a
URL with its passwords hidden, as mlpipe shows every URL), :func:`scrub` (a
text, such as an error message, with the passwords of a URL hidden),
:func:`model_run` (the final stage run behind ``models:/<name>@<alias>``),
:func:`check_registered_model_name` (whether MLflow's model registry takes a name),
:func:`newest_chain` (:func:`mlpipe.find_chain` without its warning on a miss, for a
caller that fits what is missing) and
:data:`FIT_SOURCE` (what stage runs name as their source, as the ``mlpipe``
command sets it).
"""

from mlpipe.tracking._gc import collect_garbage
from mlpipe.tracking._models import check_registered_model_name, model_run
from mlpipe.tracking._query import newest_chain
from mlpipe.tracking._store import FIT_SOURCE, redact, scrub

__all__ = [
    "FIT_SOURCE",
    "check_registered_model_name",
    "collect_garbage",
    "model_run",
    "newest_chain",
    "redact",
    "scrub",
]
