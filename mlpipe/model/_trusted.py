"""Load fitted steps saved with skops, refusing every type outside an explicit allow-list.

Nothing here unpickles: skops rebuilds an object from a JSON description and from
numpy arrays read with ``allow_pickle=False``, and only imports and instantiates
the types that it and :data:`TRUSTED` allow.

This module must not import mlpipe: a model logged with ``serializer="skops"``
carries a copy of it (as ``_mlpipe_trusted``) and loads its steps with it where
mlpipe is not installed.
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

__all__ = ["TRUSTED", "UntrustedTypesError", "loads", "modules_of", "untrusted_types"]

# The types trusted beyond skops' own defaults (scikit-learn's estimators and the
# internal types skops vetted, numpy and scipy arrays, numpy functions, builtins).
# Each is rebuilt without running code of its own; add a type only after checking
# the same of it.
TRUSTED = (
    # skops rebuilds a dtype from an empty array read with allow_pickle=False. It
    # leaves dtypes untrusted only for want of a policy, yet almost every fitted
    # scikit-learn step holds one.
    "numpy.dtype",
    # make_column_selector is rebuilt by setting its three attributes (a column name
    # pattern, the dtypes to include and to exclude); it runs no code of its own.
    "sklearn.compose._column_transformer.make_column_selector",
)


class UntrustedTypesError(TypeError):
    """A skops file holds types that neither skops nor :data:`TRUSTED` trusts.

    A ``TypeError``, as skops' own ``UntrustedTypesFoundException`` is.
    """

    def __init__(self, found: list[str], what: str):
        super().__init__(
            f"Refusing to load {what}: it holds type(s) {found}, which neither skops "
            f"nor mlpipe's allow-list {list(TRUSTED)} trusts. A model logged by mlpipe "
            "with serializer='skops' never holds such types: this file was written "
            "otherwise or has been changed since.",
        )
        self.found = found


def untrusted_types(data: bytes) -> list[str]:
    """The types in skops ``data`` that neither skops nor :data:`TRUSTED` trusts, sorted."""
    # Imported when needed: skops imports every scikit-learn estimator (a second).
    import skops.io

    return [name for name in skops.io.get_untrusted_types(data=data) if name not in TRUSTED]


def loads(data: bytes, what: str = "a skops file") -> Any:
    """Load skops ``data`` after checking that every type in it is trusted.

    Raises
    ------
    UntrustedTypesError
        If some type is not trusted; nothing is imported or built then.
    """
    found = untrusted_types(data)
    if found:
        raise UntrustedTypesError(found, what)
    import skops.io

    # skops audits the types once more before it builds anything.
    return skops.io.loads(data, trusted=list(TRUSTED))


def modules_of(data: bytes) -> set[str]:
    """The top-level modules whose types skops ``data`` refers to."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        schema = json.loads(archive.read("schema.json"))
    found: set[str] = set()
    pending: list[Any] = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            module = node.get("__module__")
            if isinstance(module, str):
                found.add(module.partition(".")[0])
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return found
