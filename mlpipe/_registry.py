"""Registries of processing logics and algorithms, by name.

A factory is a function returning a scikit-learn transformer (a logic) or estimator
(an algorithm). Its keyword parameters, with their type annotations, are the
hyperparameters the command line accepts as ``-P name=value``. Teams add their own
with the decorators, or from their own package through the entry-point groups
``mlpipe.logics`` and ``mlpipe.algorithms``.

A name is registered once. The built-ins (``mlpipe._builtins``, which imports nothing of
mlpipe) are registered when a registry is created, before anything else can be; the
entry points of installed packages on the first lookup, in the order of their
distributions' names; a decorator when its module is imported. Registering a name that
is taken raises :class:`~mlpipe.exceptions.RegistrationError`, unless ``replace=True``;
an entry point never replaces a name: it is ignored, with a warning naming both.

An algorithm fits some kinds of target, as scikit-learn's ``type_of_target`` names
them (:func:`target_type`): a built-in says which (``rf`` fits ``binary``,
``multiclass`` and ``continuous`` targets, building a classifier or a regressor), and so
may any other (``targets=`` of :func:`algorithm`, or a ``mlpipe_targets`` attribute of an
entry point's factory); one that does not is judged by what its factory builds (a
classifier fits ``binary`` and ``multiclass`` targets, a regressor ``continuous``
ones). ``build(..., target_type=...)`` refuses an algorithm that cannot fit the target
before anything is built (when it says what it fits), let alone fitted.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import logging
import re
import types
import typing
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from mlpipe import _builtins
from mlpipe.exceptions import NotFoundError, RegistrationError, TargetTypeError

__all__ = ["ALGORITHMS", "LOGICS", "Entry", "Registry", "algorithm", "logic", "target_type"]

logger = logging.getLogger("mlpipe")

F = TypeVar("F", bound=Callable[..., Any])

# The keyword through which a factory that fits several kinds of target is told which;
# it is not a hyperparameter (no -P, not listed).
TARGET_TYPE = "target_type"


@dataclasses.dataclass
class Entry:
    """A registered factory, the search space offered for ``--search``, and its origin.

    ``origin`` says where the factory was registered from, for messages: ``"the built-in
    mlpipe._builtins:plain"``, ``"the entry point 'mlpipe.logics: winsorized =
    teampkg.logics:winsorized' of teampkg 0.4.0"`` or ``"teampkg.logics:robust, registered
    in Python"``. An entry point may load an ``Entry``; mlpipe sets its origin.
    """

    factory: Callable[..., Any]
    grid: dict[str, list[Any]] = dataclasses.field(default_factory=dict)
    origin: str = ""
    # The kinds of target (type_of_target) it fits; () when judged by what it builds.
    targets: tuple[str, ...] = ()


class Registry:
    """Factories of one kind (``"logic"`` or ``"algorithm"``) by name.

    A name is registered once: first the ``builtins``, then, on the first lookup, the
    entry points of ``group``, in the order of their distributions' names. Registering a
    taken name raises :class:`~mlpipe.exceptions.RegistrationError` unless
    ``replace=True``; an entry point with a taken name is ignored with a warning.
    """

    def __init__(self, kind: str, group: str, builtins: _builtins.Table | None = None):
        self.kind = kind
        self.group = group
        self._entries: dict[str, Entry] = {}
        self._loaded = False  # the entry points
        for name, (factory, grid, targets) in (builtins or {}).items():
            origin = f"the built-in {_where(factory)}"
            self._add(name, Entry(factory, dict(grid), origin, tuple(targets)))

    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        grid: dict[str, list[Any]] | None = None,
        targets: tuple[str, ...] | list[str] | None = None,
        replace: bool = False,
    ) -> None:
        """Register ``factory`` under ``name``.

        Parameters
        ----------
        name : str
            The name, not yet registered (unless ``replace``).
        factory : callable
            Returns a new, unfitted object on every call.
        grid : dict of str to list, optional
            The search space of ``--search``.
        targets : tuple of str, optional
            The kinds of target (:func:`target_type`) an algorithm fits; not given:
            judged by what the factory builds.
        replace : bool, default False
            Replace the factory registered under ``name``, if there is one: a built-in,
            one from an entry point or one registered before.

        Raises
        ------
        RegistrationError
            If ``name`` is registered and ``replace`` is False, naming where the
            registered factory comes from. The same function registered again (the same
            object, or the same module and qualified name, as when a notebook cell runs
            again or a module is reloaded) replaces the earlier registration instead.
            Also if ``targets`` names a kind of target that ``type_of_target`` has not.
        """
        origin = f"{_where(factory)}, registered in Python"
        entry = Entry(factory, dict(grid or {}), origin, self._targets(name, targets, origin))
        self._add(name, entry, replace=replace)

    def _targets(self, name: str, targets: Any, origin: str) -> tuple[str, ...]:
        """``targets`` as declared for ``name``, checked: a tuple of kinds of target."""
        if targets is None:
            return ()
        kinds = (targets,) if isinstance(targets, str) else tuple(targets)
        unknown = [k for k in kinds if k not in _TARGET_KINDS]
        if unknown or not kinds:
            raise RegistrationError(
                f"{self.kind.capitalize()} {name!r} ({origin}) declares targets={targets!r}; "
                f"expected kinds of target as type_of_target names them: "
                f"{', '.join(_TARGET_KINDS)}."
            )
        return kinds

    def _add(self, name: str, entry: Entry, *, replace: bool = False) -> None:
        if not name or not isinstance(name, str):
            raise RegistrationError(f"A {self.kind} needs a non-empty name, got {name!r}.")
        existing = self._entries.get(name)
        if existing is not None and not replace and not _same(existing.factory, entry.factory):
            raise RegistrationError(
                f"{self.kind.capitalize()} {name!r} is already registered ({existing.origin}); "
                f"{_where(entry.factory)} was not registered. "
                "Pass replace=True to replace it, or pick another name."
            )
        self._entries[name] = entry

    def _load_entry_points(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        for point in sorted(importlib.metadata.entry_points(group=self.group), key=_order):
            try:
                loaded = point.load()
            except Exception as error:
                # A broken plugin must not hide the others; say which and why.
                logger.warning(
                    "Cannot load %s %r from %s: %s", self.kind, point.name, point.value, error
                )
                continue
            described = f"'{self.group}: {point.name} = {point.value}'{_of(point)}"
            if isinstance(loaded, Entry):
                entry = dataclasses.replace(loaded, origin=f"the entry point {described}")
            else:
                grid = dict(getattr(loaded, "mlpipe_grid", None) or {})
                origin = f"the entry point {described}"
                try:
                    targets = self._targets(
                        point.name, getattr(loaded, "mlpipe_targets", None), origin
                    )
                except RegistrationError as error:
                    logger.warning("%s It is ignored.", error)
                    continue
                entry = Entry(loaded, grid, origin, targets)
            existing = self._entries.get(point.name)
            if existing is None:
                self._add(point.name, entry)
            elif existing.factory is not entry.factory:
                # An installed package must not break every command: keep the earlier one.
                logger.warning(
                    "Entry point %s is ignored: %s %r is already registered (%s). "
                    "An entry point cannot replace a registered name; rename it.",
                    described,
                    self.kind,
                    point.name,
                    existing.origin,
                )
            # else: a module named by an entry point and registered by its decorator too.

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
        return {
            p.name: p for p in _keywords(self.entry(name).factory).values() if p.name != TARGET_TYPE
        }

    def targets(self, name: str) -> tuple[str, ...]:
        """The kinds of target (:func:`target_type`) that ``name`` fits.

        A built-in says, as may any other (``targets=``); one that does not is judged
        by what its factory builds with
        its defaults: a classifier fits ``("binary", "multiclass")``, a regressor
        ``("continuous",)``; anything else (or a factory that fails) ``()``: not known.
        """
        entry = self.entry(name)
        if entry.targets:
            return entry.targets
        try:
            built = entry.factory()
        except Exception:  # it needs parameters: judged again when built with them
            return ()
        return _fits(built)

    def build(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        *,
        target_type: str | None = None,
    ) -> Any:
        """Call ``name``'s factory with ``params``; text values are converted by annotation.

        Parameters
        ----------
        name : str
        params : dict, optional
            Hyperparameters; text values are converted by the factory's annotations.
        target_type : str, optional
            The kind of the target it will be fitted on (:func:`target_type`). A
            factory that fits several kinds is told which; an algorithm that does not
            fit it is refused, before it is built when it says what it fits.

        Raises
        ------
        NotFoundError
            If the name is unknown.
        TargetTypeError
            If the algorithm cannot fit a ``target_type`` target.
        ValueError
            If a parameter is unknown or its value does not convert.
        """
        entry = self.entry(name)
        if target_type is not None and entry.targets:
            self._check_fits(name, entry.targets, target_type)
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
        if target_type is not None and TARGET_TYPE in _keywords(entry.factory):
            kwargs[TARGET_TYPE] = target_type
        built = entry.factory(**kwargs)
        if target_type is not None and not entry.targets:
            self._check_fits(name, _fits(built), target_type)
        try:  # what a reproduce with current code rebuilds it from (see built_by)
            _BUILT[built] = {
                "kind": self.kind,
                "name": name,
                "params": {k: v for k, v in (params or {}).items()},
                "target_type": target_type,
            }
        except TypeError:  # not weakly referenceable: it is rebuilt from its class
            pass
        return built

    def _check_fits(self, name: str, fits: tuple[str, ...], target_type: str) -> None:
        if not fits or target_type in fits or target_type not in _KNOWN_TARGETS:
            return
        others = [n for n in self.names() if target_type in self.targets(n)]
        raise TargetTypeError(
            f"{self.kind.capitalize()} {name!r} fits {' and '.join(fits)} targets, and this "
            f"target is {target_type}. {self.kind.capitalize()}s that fit a {target_type} "
            f"target: {', '.join(others) or 'none'} (mlpipe runs --list)."
        )


# The kinds of target whose fit is checked; others (multilabel, multioutput) are
# left to the estimator.
_KNOWN_TARGETS = frozenset(_builtins.BOTH)
# What an algorithm may declare it fits: type_of_target's kinds, but "unknown".
_TARGET_KINDS = (
    *_builtins.BOTH,
    "multilabel-indicator",
    "multiclass-multioutput",
    "continuous-multioutput",
)


def _keywords(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return {
        p.name: p
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def _fits(estimator: Any) -> tuple[str, ...]:
    """The kinds of target an estimator fits, by its scikit-learn tags."""
    from sklearn.base import is_classifier, is_regressor

    if is_classifier(estimator):
        return _builtins.CLASSIFICATION
    if is_regressor(estimator):
        return _builtins.REGRESSION
    return ()


def target_type(y: Any) -> str:
    """The kind of target ``y`` is, as scikit-learn's ``type_of_target`` says, for
    picking an algorithm.

    One refinement: a float target that ``type_of_target`` calls ``"multiclass"``
    because its values happen to be whole numbers (grams, counts: a column that a
    database or a missing value made float) is ``"continuous"``. Class labels are
    text, integers or booleans.

    Parameters
    ----------
    y : array-like
        The target column.

    Returns
    -------
    str
        ``"binary"``, ``"multiclass"``, ``"continuous"``, or another
        ``type_of_target`` kind (``"multilabel-indicator"``, ...).

    Raises
    ------
    TargetTypeError
        If the target has missing values: no algorithm learns from them.

    Examples
    --------
    >>> import pandas as pd
    >>> from mlpipe._registry import target_type
    >>> target_type(pd.Series(["Adelie", "Gentoo", "Chinstrap"]))
    'multiclass'
    >>> target_type(pd.Series([3750.0, 3800.0, 3250.0]))
    'continuous'
    """
    import numpy as np
    import pandas as pd
    from sklearn.utils.multiclass import type_of_target

    missing = int(pd.isna(pd.DataFrame(y)).to_numpy().sum())
    name = getattr(y, "name", None)
    what = f"Target {name!r}" if isinstance(name, str) else "The target"
    if missing:
        raise TargetTypeError(
            f"{what} has {missing} missing value(s): no algorithm learns from them. "
            "Load only the rows that have one (from a database: a query with "
            f"WHERE {name if isinstance(name, str) else '<target>'} IS NOT NULL)."
        )
    kind = str(type_of_target(y))
    if kind == "multiclass" and np.asarray(y).dtype.kind == "f":
        return "continuous"
    return kind


def _where(factory: Callable[..., Any]) -> str:
    """``module:qualified.name`` of ``factory``, as an entry point names it."""
    module = getattr(factory, "__module__", None) or "?"
    return f"{module}:{getattr(factory, '__qualname__', repr(factory))}"


def _same(registered: Callable[..., Any], new: Callable[..., Any]) -> bool:
    """Whether ``new`` is ``registered`` or the same function defined again (a notebook
    cell run again, a module reloaded); lambdas have no name to tell them apart by."""
    if registered is new:
        return True
    module, qualname = getattr(new, "__module__", None), getattr(new, "__qualname__", None)
    return (
        module is not None
        and qualname is not None
        and "<lambda>" not in qualname
        and (module, qualname)
        == (getattr(registered, "__module__", None), getattr(registered, "__qualname__", None))
    )


def _order(point: importlib.metadata.EntryPoint) -> tuple[str, str]:
    """Entry points in the order of their distributions' normalized names, then their own."""
    dist = getattr(point, "dist", None)
    return (re.sub(r"[-_.]+", "-", dist.name).lower() if dist else "", point.name)


def _of(point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f" of {dist.name} {dist.version}" if dist else ""


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


# Objects that Registry.build returned, and how: see built_by.
_BUILT: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def built_by(obj: Any) -> dict[str, Any] | None:
    """How a registry built ``obj``: ``kind``, ``name``, ``params``, ``target_type``; or None."""
    try:
        return _BUILT.get(obj)
    except TypeError:
        return None


LOGICS = Registry("logic", "mlpipe.logics", builtins=_builtins.LOGICS)
ALGORITHMS = Registry("algorithm", "mlpipe.algorithms", builtins=_builtins.ALGORITHMS)


def logic(
    name: str, *, grid: dict[str, list[Any]] | None = None, replace: bool = False
) -> Callable[[F], F]:
    """Register a processing-logic factory under ``name``.

    Parameters
    ----------
    name : str
        The name, not yet registered (unless ``replace``).
    grid : dict of str to list, optional
        A search space; no command searches over a logic.
    replace : bool, default False
        Replace the factory registered under ``name``, if there is one: a built-in, one
        from an entry point or one registered before.

    Returns
    -------
    decorator : callable
        Registers the function it is given and returns it unchanged.

    Raises
    ------
    RegistrationError
        If ``name`` is registered and ``replace`` is False; the message says where the
        registered factory comes from. The same function registered again (a notebook
        cell run again, a module reloaded) replaces its earlier registration instead.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.preprocessing import StandardScaler
    >>> @mlpipe.logic("scaled")
    ... def scaled(*, with_mean: bool = True):
    ...     return StandardScaler(with_mean=with_mean)
    >>> mlpipe.LOGICS.build("scaled", {"with_mean": "false"})
    StandardScaler(with_mean=False)

    A name is registered once:

    >>> @mlpipe.logic("plain")  # doctest: +ELLIPSIS
    ... def plain():
    ...     return StandardScaler()
    Traceback (most recent call last):
    ...
    mlpipe.exceptions.RegistrationError: Logic 'plain' is already registered (the built-in ...
    """

    def decorate(factory: F) -> F:
        LOGICS.register(name, factory, grid=grid, replace=replace)
        return factory

    return decorate


def algorithm(
    name: str,
    *,
    grid: dict[str, list[Any]] | None = None,
    targets: tuple[str, ...] | list[str] | None = None,
    replace: bool = False,
) -> Callable[[F], F]:
    """Register an algorithm factory under ``name``; ``grid`` is its ``--search`` space.

    Parameters
    ----------
    name : str
        The name, not yet registered (unless ``replace``).
    grid : dict of str to list, optional
        The search space of ``mlpipe train --search``: parameters of the object the
        factory returns, to lists of values.
    targets : tuple of str, optional
        The kinds of target it fits, as :func:`target_type` names them (``"binary"``,
        ``"multiclass"``, ``"continuous"``, ...). A factory that fits several takes the
        keyword ``target_type`` and builds the estimator for the one it is given. Not
        given: judged by what the factory builds with its defaults (a classifier fits
        ``binary`` and ``multiclass`` targets, a regressor ``continuous`` ones).
    replace : bool, default False
        Replace the factory registered under ``name``, if there is one: a built-in, one
        from an entry point or one registered before.

    Returns
    -------
    decorator : callable
        Registers the function it is given and returns it unchanged.

    Raises
    ------
    RegistrationError
        If ``name`` is registered and ``replace`` is False; the message says where the
        registered factory comes from. The same function registered again (a notebook
        cell run again, a module reloaded) replaces its earlier registration instead.
        Also if ``targets`` names a kind of target that ``type_of_target`` has not.

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.tree import DecisionTreeClassifier
    >>> @mlpipe.algorithm("shallow_tree", grid={"max_depth": [2, 4, 8]})
    ... def shallow_tree(*, max_depth: int | None = 3):
    ...     return DecisionTreeClassifier(max_depth=max_depth, random_state=0)
    >>> mlpipe.ALGORITHMS.build("shallow_tree", {"max_depth": "2"})
    DecisionTreeClassifier(max_depth=2, random_state=0)

    One that fits several kinds of target says which, and builds the estimator for
    the ``target_type`` it is given:

    >>> from sklearn.tree import DecisionTreeRegressor
    >>> @mlpipe.algorithm("any_tree", targets=("binary", "multiclass", "continuous"))
    ... def any_tree(*, target_type: str = "binary", max_depth: int = 3):
    ...     tree = DecisionTreeRegressor if target_type == "continuous" else DecisionTreeClassifier
    ...     return tree(max_depth=max_depth, random_state=0)
    >>> mlpipe.ALGORITHMS.targets("any_tree")
    ('binary', 'multiclass', 'continuous')
    >>> mlpipe.ALGORITHMS.build("any_tree", target_type="continuous")
    DecisionTreeRegressor(max_depth=3, random_state=0)
    """

    def decorate(factory: F) -> F:
        ALGORITHMS.register(name, factory, grid=grid, targets=targets, replace=replace)
        return factory

    return decorate
