"""Registries of processing logics and algorithms, by name.

A factory is a function returning a scikit-learn transformer (a logic) or estimator
(an algorithm). Its keyword parameters, with their type annotations, are the
hyperparameters the command line accepts as ``-P name=value``. Teams add their own
with the decorators, or from their own package through the entry-point groups
``mlpipe.logics`` and ``mlpipe.algorithms``.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from mlpipe.exceptions import NotFoundError

__all__ = ["ALGORITHMS", "LOGICS", "Registry", "algorithm", "logic"]

logger = logging.getLogger("mlpipe")

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass
class Entry:
    """A registered factory and the search space offered for ``--search``."""

    factory: Callable[..., Any]
    grid: dict[str, list[Any]] = dataclasses.field(default_factory=dict)


class Registry:
    """Factories of one kind (``"logic"`` or ``"algorithm"``) by name."""

    def __init__(self, kind: str, group: str):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def register(
        self, name: str, factory: Callable[..., Any], *, grid: dict[str, list[Any]] | None = None
    ) -> None:
        """Register ``factory`` under ``name`` (replacing an earlier one of that name)."""
        if not name or not isinstance(name, str):
            raise ValueError(f"A {self.kind} needs a non-empty name, got {name!r}.")
        self._entries[name] = Entry(factory, dict(grid or {}))

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        import mlpipe._builtins  # noqa: F401  (registers the built-in logics and algorithms)

        for point in importlib.metadata.entry_points(group=self.group):
            if point.name in self._entries:
                continue
            try:
                loaded = point.load()
            except Exception as error:
                # A broken plugin must not hide the others; say which and why.
                logger.warning(
                    "Cannot load %s %r from %s: %s", self.kind, point.name, point.value, error
                )
                continue
            if isinstance(loaded, Entry):
                self._entries[point.name] = loaded
            else:
                self.register(point.name, loaded, grid=getattr(loaded, "mlpipe_grid", None))

    def names(self) -> list[str]:
        """Every registered name, built-in and from entry points, sorted."""
        self._load_entry_points()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry:
        """The entry called ``name``.

        Raises
        ------
        NotFoundError
            Naming the known ones.
        """
        self._load_entry_points()
        if name not in self._entries:
            raise NotFoundError(
                f"Unknown {self.kind} {name!r}. Known {self.kind}s: {', '.join(self.names())}."
            )
        return self._entries[name]

    def parameters(self, name: str) -> dict[str, inspect.Parameter]:
        """The hyperparameters of ``name``'s factory."""
        signature = inspect.signature(self.entry(name).factory)
        return {
            p.name: p
            for p in signature.parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        }

    def build(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """Call ``name``'s factory with ``params``; text values are converted by annotation.

        Raises
        ------
        NotFoundError
            If the name is unknown.
        ValueError
            If a parameter is unknown or its value does not convert.
        """
        entry = self.entry(name)
        accepted = self.parameters(name)
        hints = typing.get_type_hints(entry.factory)
        kwargs = {}
        for key, value in (params or {}).items():
            if key not in accepted:
                raise ValueError(
                    f"{self.kind.capitalize()} {name!r} has no parameter {key!r}; "
                    f"its parameters are: {', '.join(accepted) or 'none'}."
                )
            kwargs[key] = (
                convert(value, hints.get(key), f"{name}.{key}") if isinstance(value, str) else value
            )
        return entry.factory(**kwargs)


def convert(text: str, annotation: Any, what: str) -> Any:
    """``text`` as a value of type ``annotation`` (int, float, bool, str, None, unions)."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if type(None) in options and text.lower() in ("none", "null", ""):
        return None
    for option in options:
        if option is bool:
            lowered = text.lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
        elif option in (int, float):
            try:
                return option(text)
            except ValueError:
                continue
        elif option is str or option is None or option is Any:
            return text
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ValueError(f"Parameter {what} expects {expected}, got {text!r}.")


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


LOGICS = Registry("logic", "mlpipe.logics")
ALGORITHMS = Registry("algorithm", "mlpipe.algorithms")


def logic(name: str, *, grid: dict[str, list[Any]] | None = None) -> Callable[[F], F]:
    """Register a processing-logic factory under ``name``.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.preprocessing import StandardScaler
    >>> @mlpipe.logic("scaled")
    ... def scaled(*, with_mean: bool = True):
    ...     return StandardScaler(with_mean=with_mean)
    >>> mlpipe.LOGICS.build("scaled", {"with_mean": "false"})
    StandardScaler(with_mean=False)
    """

    def decorate(factory: F) -> F:
        LOGICS.register(name, factory, grid=grid)
        return factory

    return decorate


def algorithm(name: str, *, grid: dict[str, list[Any]] | None = None) -> Callable[[F], F]:
    """Register an algorithm factory under ``name``; ``grid`` is its ``--search`` space.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> @mlpipe.algorithm("tree", grid={"max_depth": [2, 4, 8]})
    ... def tree(*, max_depth: int | None = None):
    ...     return DecisionTreeClassifier(max_depth=max_depth, random_state=0)
    >>> mlpipe.ALGORITHMS.build("tree", {"max_depth": "3"})
    DecisionTreeClassifier(max_depth=3, random_state=0)
    """

    def decorate(factory: F) -> F:
        ALGORITHMS.register(name, factory, grid=grid)
        return factory

    return decorate
